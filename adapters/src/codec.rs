//! Decoding and encoding driven by a [`Dialect`] table.
//!
//! Decoding checks the structure first (lengths, prefixes, bitmaps) and the content of each value
//! second (digits in numeric fields, valid hex and BCD). A structural error stops decoding, since
//! nothing after it can be located; a content error is recorded and decoding goes on, so that a
//! message with one malformed field still yields its MTI and field 11 and can be answered with
//! response code 30 (DESIGN §3.5).

use std::borrow::Cow;
use std::fmt;

use crate::dialect::{Content, Dialect, Encoding, FieldSpec, HeaderEncoding, Length, Prefix};
use crate::message::{Message, Mti};

/// Which part of a message an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Mti,
    PrimaryBitmap,
    SecondaryBitmap,
    Field(u8),
    /// Bytes after the last field.
    End,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Mti => f.write_str("MTI"),
            Part::PrimaryBitmap => f.write_str("primary bitmap"),
            Part::SecondaryBitmap => f.write_str("secondary bitmap"),
            Part::Field(n) => write!(f, "field {n}"),
            Part::End => f.write_str("end of message"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    #[error("needs {needed} bytes, only {available} left")]
    Truncated { needed: usize, available: usize },
    #[error("MTI is not 4 digits")]
    BadMti,
    #[error("bitmap is not 16 hex characters")]
    BadBitmap,
    #[error("length prefix is not digits")]
    BadLengthPrefix,
    #[error("length {length} exceeds the maximum {max}")]
    LengthOverMax { length: usize, max: u16 },
    #[error("byte 0x{byte:02X} at position {position} of a numeric field is not a digit")]
    NotNumeric { byte: u8, position: usize },
    #[error("BCD nibble 0x{nibble:X} at position {position} is not a digit")]
    BadBcd { nibble: u8, position: usize },
    #[error("{0} bytes follow the last field")]
    TrailingBytes(usize),
}

impl DecodeErrorKind {
    /// A content error leaves the message's structure readable.
    pub fn is_content(&self) -> bool {
        matches!(
            self,
            DecodeErrorKind::NotNumeric { .. } | DecodeErrorKind::BadBcd { .. }
        )
    }
}

/// What was wrong, where: `field 4 at byte 20: byte 0x41 at position 3 of a numeric field is
/// not a digit`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{part} at byte {offset}: {kind}")]
pub struct DecodeError {
    pub part: Part,
    /// Offset of the part's first byte within the message (after any frame header).
    pub offset: usize,
    pub kind: DecodeErrorKind,
}

/// The outcome of [`Dialect::decode_partial`].
#[derive(Debug)]
pub enum PartialDecode<'a> {
    Complete(Message<'a>),
    /// The MTI was read; `message` holds every field read before decoding stopped (all of them
    /// when the error is a content error), and `error` is the first problem found.
    Malformed {
        message: Message<'a>,
        error: DecodeError,
    },
    /// Not even the MTI and bitmap could be read.
    Unreadable(DecodeError),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("field {field}: length {actual} differs from the fixed length {expected}")]
    WrongLength {
        field: u8,
        expected: u16,
        actual: usize,
    },
    #[error("field {field}: length {actual} exceeds the maximum {max}")]
    TooLong { field: u8, max: u16, actual: usize },
    #[error("field {field}: byte 0x{byte:02X} at position {position} is not allowed in this field")]
    BadContent {
        field: u8,
        byte: u8,
        position: usize,
    },
}

struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize, part: Part) -> Result<&'a [u8], DecodeError> {
        let available = self.bytes.len() - self.position;
        if count > available {
            return Err(DecodeError {
                part,
                offset: self.position,
                kind: DecodeErrorKind::Truncated {
                    needed: count,
                    available,
                },
            });
        }
        let slice = &self.bytes[self.position..self.position + count];
        self.position += count;
        Ok(slice)
    }
}

fn bit_is_set(bitmap: &[u8; 16], field: usize) -> bool {
    bitmap[(field - 1) / 8] & (0x80 >> ((field - 1) % 8)) != 0
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        _ => None,
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789ABCDEF";

/// Hex text to bytes; the error is the index of the first bad character.
fn unhex_into(text: &[u8], out: &mut [u8]) -> Result<(), (u8, usize)> {
    for (i, pair) in text.chunks_exact(2).enumerate() {
        let high = hex_value(pair[0]).ok_or((pair[0], 2 * i))?;
        let low = hex_value(pair[1]).ok_or((pair[1], 2 * i + 1))?;
        out[i] = high << 4 | low;
    }
    Ok(())
}

fn parse_digits(digits: &[u8]) -> Option<usize> {
    digits.iter().try_fold(0usize, |acc, &d| {
        d.is_ascii_digit().then(|| acc * 10 + usize::from(d - b'0'))
    })
}

/// Digits from packed BCD: `count` digits, padding nibble on the left or right when odd.
fn unpack_bcd(
    packed: &[u8],
    count: usize,
    pad_left: bool,
    track2: bool,
) -> (Vec<u8>, Option<(u8, usize)>) {
    let skip = usize::from(count % 2 == 1 && pad_left);
    let mut digits = Vec::with_capacity(count);
    let mut first_error = None;
    for i in skip..skip + count {
        let byte = packed[i / 2];
        let nibble = if i % 2 == 0 { byte >> 4 } else { byte & 0x0F };
        let digit = match nibble {
            0..=9 => b'0' + nibble,
            0xD if track2 => b'=',
            _ => {
                first_error.get_or_insert((nibble, i - skip));
                b'?'
            }
        };
        digits.push(digit);
    }
    (digits, first_error)
}

fn pack_bcd(digits: &[u8], pad_left: bool, out: &mut Vec<u8>) {
    let nibble = |d: u8| match d {
        b'=' | b'D' => 0xD,
        _ => d - b'0',
    };
    let pad = digits.len() % 2 == 1;
    let mut iter = digits.iter().map(|&d| nibble(d));
    if pad && pad_left {
        out.push(iter.next().unwrap_or(0));
    }
    while let Some(high) = iter.next() {
        out.push(high << 4 | iter.next().unwrap_or(0));
    }
}

fn check_content(content: Content, value: &[u8]) -> Result<(), (u8, usize)> {
    // One loop per class, so the per-byte test inlines (a function pointer here cost ~2x).
    let bad = match content {
        Content::Numeric => value.iter().position(|b| !b.is_ascii_digit()),
        Content::Track2 => value
            .iter()
            .position(|&b| !(b.is_ascii_digit() || b == b'=' || b == b'D')),
        Content::Text | Content::Binary => None,
    };
    match bad {
        Some(position) => Err((value[position], position)),
        None => Ok(()),
    }
}

impl Dialect {
    /// Decodes one whole message (no frame header); any problem is an error.
    pub fn decode<'a>(&self, bytes: &'a [u8]) -> Result<Message<'a>, DecodeError> {
        match self.decode_partial(bytes) {
            PartialDecode::Complete(message) => Ok(message),
            PartialDecode::Malformed { error, .. } | PartialDecode::Unreadable(error) => Err(error),
        }
    }

    /// Decodes as much as can be read, for answering a malformed request with code 30.
    pub fn decode_partial<'a>(&self, bytes: &'a [u8]) -> PartialDecode<'a> {
        let mut reader = Reader { bytes, position: 0 };
        let (mti, bitmap) = match self.decode_header(&mut reader) {
            Ok(header) => header,
            Err(error) => return PartialDecode::Unreadable(error),
        };
        let count = bitmap
            .iter()
            .map(|b| b.count_ones() as usize)
            .sum::<usize>();
        let mut message = Message::with_capacity(mti, count);
        let mut content_error = None;
        let last: u8 = if bit_is_set(&bitmap, 1) { 128 } else { 64 };
        for number in 2..=last {
            if !bit_is_set(&bitmap, usize::from(number)) {
                continue;
            }
            match self.decode_field(&mut reader, number) {
                Ok((value, problem)) => {
                    if let Some(problem) = problem {
                        content_error.get_or_insert(problem);
                    }
                    message.push_ordered(number, value);
                }
                Err(error) => return PartialDecode::Malformed { message, error },
            }
        }
        let trailing = bytes.len() - reader.position;
        if trailing > 0 {
            let error = DecodeError {
                part: Part::End,
                offset: reader.position,
                kind: DecodeErrorKind::TrailingBytes(trailing),
            };
            return PartialDecode::Malformed { message, error };
        }
        match content_error {
            Some(error) => PartialDecode::Malformed { message, error },
            None => PartialDecode::Complete(message),
        }
    }

    fn decode_header(&self, reader: &mut Reader<'_>) -> Result<(Mti, [u8; 16]), DecodeError> {
        let mti_offset = reader.position;
        let bad_mti = DecodeError {
            part: Part::Mti,
            offset: mti_offset,
            kind: DecodeErrorKind::BadMti,
        };
        let mti = match self.header {
            HeaderEncoding::AsciiMtiBinaryBitmap | HeaderEncoding::AsciiMtiHexBitmap => {
                Mti::from_ascii(reader.take(4, Part::Mti)?).ok_or(bad_mti)?
            }
            HeaderEncoding::BcdMtiBinaryBitmap => {
                let (digits, problem) = unpack_bcd(reader.take(2, Part::Mti)?, 4, true, false);
                if problem.is_some() {
                    return Err(bad_mti);
                }
                Mti::from_ascii(&digits).ok_or(bad_mti)?
            }
        };
        let mut bitmap = [0u8; 16];
        self.decode_bitmap(reader, Part::PrimaryBitmap, &mut bitmap[..8])?;
        if bit_is_set(&bitmap, 1) {
            self.decode_bitmap(reader, Part::SecondaryBitmap, &mut bitmap[8..])?;
        }
        Ok((mti, bitmap))
    }

    fn decode_bitmap(
        &self,
        reader: &mut Reader<'_>,
        part: Part,
        out: &mut [u8],
    ) -> Result<(), DecodeError> {
        let offset = reader.position;
        match self.header {
            HeaderEncoding::AsciiMtiHexBitmap => {
                unhex_into(reader.take(16, part)?, out).map_err(|_| DecodeError {
                    part,
                    offset,
                    kind: DecodeErrorKind::BadBitmap,
                })
            }
            HeaderEncoding::AsciiMtiBinaryBitmap | HeaderEncoding::BcdMtiBinaryBitmap => {
                out.copy_from_slice(reader.take(8, part)?);
                Ok(())
            }
        }
    }

    /// One field's value, and a content problem if there is one.
    #[allow(clippy::type_complexity)]
    fn decode_field<'a>(
        &self,
        reader: &mut Reader<'a>,
        field: u8,
    ) -> Result<(Cow<'a, [u8]>, Option<DecodeError>), DecodeError> {
        let spec = self.field(field);
        let part = Part::Field(field);
        let offset = reader.position;
        let error = |kind| DecodeError { part, offset, kind };
        // Units as the encoding counts them: bytes (raw) or BCD digits.
        let units = match spec.length {
            Length::Fixed(n) => usize::from(n),
            Length::Ll(_) | Length::Lll(_) => {
                let digits = if matches!(spec.length, Length::Ll(_)) {
                    2
                } else {
                    3
                };
                let prefix = match spec.prefix {
                    Prefix::Ascii => parse_digits(reader.take(digits, part)?),
                    Prefix::Bcd => {
                        let (text, problem) =
                            unpack_bcd(reader.take(digits.div_ceil(2), part)?, digits, true, false);
                        if problem.is_some() {
                            None
                        } else {
                            parse_digits(&text)
                        }
                    }
                };
                prefix.ok_or_else(|| error(DecodeErrorKind::BadLengthPrefix))?
            }
        };
        let (logical, wire) = match spec.encoding {
            Encoding::Raw => (units, units),
            Encoding::BcdLeft | Encoding::BcdRight => (units, units.div_ceil(2)),
        };
        let max = spec.length.max();
        if logical > usize::from(max) {
            return Err(error(DecodeErrorKind::LengthOverMax {
                length: logical,
                max,
            }));
        }
        let raw = reader.take(wire, part)?;
        let data_offset = offset + (reader.position - offset - wire);
        let content_error = |kind| {
            Some(DecodeError {
                part,
                offset: data_offset,
                kind,
            })
        };
        Ok(match spec.encoding {
            Encoding::Raw => {
                let problem =
                    check_content(spec.content, raw)
                        .err()
                        .and_then(|(byte, position)| {
                            content_error(DecodeErrorKind::NotNumeric { byte, position })
                        });
                (Cow::Borrowed(raw), problem)
            }
            Encoding::BcdLeft | Encoding::BcdRight => {
                let pad_left = spec.encoding == Encoding::BcdLeft;
                let track2 = spec.content == Content::Track2;
                let (value, problem) = unpack_bcd(raw, logical, pad_left, track2);
                let problem = problem.and_then(|(nibble, position)| {
                    content_error(DecodeErrorKind::BadBcd { nibble, position })
                });
                (Cow::Owned(value), problem)
            }
        })
    }

    /// Appends the encoded message (no frame header) to `out`. On error `out` is left as it was.
    pub fn encode(&self, message: &Message<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        let result = self.encode_unchecked(message, out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn encode_unchecked(
        &self,
        message: &Message<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let mut bitmap = [0u8; 16];
        let mut wire_estimate = 4 + 16;
        for (field, value) in message.fields() {
            let index = usize::from(field) - 1;
            bitmap[index / 8] |= 0x80 >> (index % 8);
            wire_estimate += value.len() * 2 + 3;
        }
        let secondary = bitmap[8..].iter().any(|&b| b != 0);
        if secondary {
            bitmap[0] |= 0x80;
        }
        out.reserve(wire_estimate);
        let bitmap_bytes = if secondary { &bitmap[..] } else { &bitmap[..8] };
        match self.header {
            HeaderEncoding::AsciiMtiBinaryBitmap => {
                out.extend_from_slice(&message.mti.0);
                out.extend_from_slice(bitmap_bytes);
            }
            HeaderEncoding::AsciiMtiHexBitmap => {
                out.extend_from_slice(&message.mti.0);
                push_hex(bitmap_bytes, out);
            }
            HeaderEncoding::BcdMtiBinaryBitmap => {
                pack_bcd(&message.mti.0, true, out);
                out.extend_from_slice(bitmap_bytes);
            }
        }
        for (field, value) in message.fields() {
            self.encode_field(field, self.field(field), value, out)?;
        }
        Ok(())
    }

    fn encode_field(
        &self,
        field: u8,
        spec: &FieldSpec,
        value: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        if let Err((byte, position)) = check_content(spec.content, value) {
            return Err(EncodeError::BadContent {
                field,
                byte,
                position,
            });
        }
        match spec.length {
            Length::Fixed(expected) if value.len() != usize::from(expected) => {
                return Err(EncodeError::WrongLength {
                    field,
                    expected,
                    actual: value.len(),
                });
            }
            Length::Ll(max) | Length::Lll(max) if value.len() > usize::from(max) => {
                return Err(EncodeError::TooLong {
                    field,
                    max,
                    actual: value.len(),
                });
            }
            Length::Fixed(_) => {}
            Length::Ll(_) | Length::Lll(_) => {
                let digits = if matches!(spec.length, Length::Ll(_)) {
                    2
                } else {
                    3
                };
                let mut text = [b'0'; 4];
                write_digits(value.len(), &mut text[4 - digits..]);
                match spec.prefix {
                    Prefix::Ascii => out.extend_from_slice(&text[4 - digits..]),
                    Prefix::Bcd => pack_bcd(&text[4 - digits..], true, out),
                }
            }
        }
        match spec.encoding {
            Encoding::Raw => out.extend_from_slice(value),
            Encoding::BcdLeft => pack_bcd(value, true, out),
            Encoding::BcdRight => pack_bcd(value, false, out),
        }
        Ok(())
    }
}

fn push_hex(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        out.push(HEX_DIGITS[usize::from(b >> 4)]);
        out.push(HEX_DIGITS[usize::from(b & 0x0F)]);
    }
}

/// Writes `value` right-aligned as ASCII digits into `out`, zero-filled; the caller ensures it
/// fits.
pub(crate) fn write_digits(mut value: usize, out: &mut [u8]) {
    for slot in out.iter_mut().rev() {
        *slot = b"0123456789"[value % 10];
        value /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::{ASCII_HEX_BITMAP, BCD, DEFAULT};

    fn sample() -> Message<'static> {
        let mut m = Message::new(Mti(*b"0100"));
        m.set(2, b"4000000000000002".to_vec());
        m.set(3, b"000000".to_vec());
        m.set(4, b"000000003000".to_vec());
        m.set(11, b"000123".to_vec());
        m.set(35, b"4000000000000002=2812".to_vec());
        m.set(90, b"010000012311261430150000012345600000000000".to_vec());
        m
    }

    #[test]
    fn every_dialect_round_trips_a_message_with_secondary_bitmap() {
        for dialect in [&DEFAULT, &ASCII_HEX_BITMAP, &BCD] {
            let mut wire = Vec::new();
            dialect.encode(&sample(), &mut wire).unwrap();
            let decoded = dialect.decode(&wire).unwrap();
            assert_eq!(decoded.into_owned(), sample(), "{}", dialect.name);
        }
    }

    #[test]
    fn binary_fields_are_raw_in_default_and_hex_text_in_ascii_hex_bitmap() {
        let pin = [0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF];
        let mut m = Message::new(Mti(*b"0100"));
        m.set(52, &pin[..]);
        let mut wire = Vec::new();
        DEFAULT.encode(&m, &mut wire).unwrap();
        assert_eq!(&wire[12..], pin);
        m.set(52, &b"0123456789ABCDEF"[..]);
        wire.clear();
        ASCII_HEX_BITMAP.encode(&m, &mut wire).unwrap();
        assert_eq!(&wire[..], b"010000000000000010000123456789ABCDEF");
    }

    #[test]
    fn bcd_packs_numerics_and_prefixes() {
        let mut m = Message::new(Mti(*b"0800"));
        m.set(2, b"123".to_vec());
        m.set(11, b"000001".to_vec());
        let mut wire = Vec::new();
        BCD.encode(&m, &mut wire).unwrap();
        let bitmap = [0x40, 0x20, 0, 0, 0, 0, 0, 0];
        let mut expected = vec![0x08, 0x00];
        expected.extend_from_slice(&bitmap);
        // Field 2: BCD prefix 03, digits right-padded: 0x12 0x30. Field 11: 00 00 01.
        expected.extend_from_slice(&[0x03, 0x12, 0x30, 0x00, 0x00, 0x01]);
        assert_eq!(wire, expected);
    }

    fn decode_error(dialect: &Dialect, wire: &[u8]) -> DecodeError {
        dialect.decode(wire).unwrap_err()
    }

    fn wire_of(build: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut wire = b"0100".to_vec();
        build(&mut wire);
        wire
    }

    #[test]
    fn decode_errors_name_part_offset_and_problem() {
        // Bitmap with fields 2 and 4: 0x50.
        let cases: Vec<(Vec<u8>, Part, usize, DecodeErrorKind)> = vec![
            (
                b"01".to_vec(),
                Part::Mti,
                0,
                DecodeErrorKind::Truncated {
                    needed: 4,
                    available: 2,
                },
            ),
            (
                b"01X0\0\0\0\0\0\0\0\0".to_vec(),
                Part::Mti,
                0,
                DecodeErrorKind::BadMti,
            ),
            (
                wire_of(|w| w.extend_from_slice(&[0x50, 0, 0])),
                Part::PrimaryBitmap,
                4,
                DecodeErrorKind::Truncated {
                    needed: 8,
                    available: 3,
                },
            ),
            (
                wire_of(|w| {
                    w.extend_from_slice(&[0x40, 0, 0, 0, 0, 0, 0, 0]);
                    w.extend_from_slice(b"2X4000");
                }),
                Part::Field(2),
                12,
                DecodeErrorKind::BadLengthPrefix,
            ),
            (
                wire_of(|w| {
                    w.extend_from_slice(&[0x40, 0, 0, 0, 0, 0, 0, 0]);
                    w.extend_from_slice(b"20400000000000000000000");
                }),
                Part::Field(2),
                12,
                DecodeErrorKind::LengthOverMax {
                    length: 20,
                    max: 19,
                },
            ),
            (
                wire_of(|w| {
                    w.extend_from_slice(&[0x10, 0, 0, 0, 0, 0, 0, 0]);
                    w.extend_from_slice(b"0000000030A0");
                }),
                Part::Field(4),
                12,
                DecodeErrorKind::NotNumeric {
                    byte: b'A',
                    position: 10,
                },
            ),
            (
                wire_of(|w| {
                    w.extend_from_slice(&[0x10, 0, 0, 0, 0, 0, 0, 0]);
                    w.extend_from_slice(b"00000000300");
                }),
                Part::Field(4),
                12,
                DecodeErrorKind::Truncated {
                    needed: 12,
                    available: 11,
                },
            ),
            (
                wire_of(|w| {
                    w.extend_from_slice(&[0x10, 0, 0, 0, 0, 0, 0, 0]);
                    w.extend_from_slice(b"000000003000XY");
                }),
                Part::End,
                24,
                DecodeErrorKind::TrailingBytes(2),
            ),
        ];
        for (wire, part, offset, kind) in cases {
            let error = decode_error(&DEFAULT, &wire);
            assert_eq!(error, DecodeError { part, offset, kind }, "{wire:?}");
        }
    }

    #[test]
    fn decode_error_message_is_actionable() {
        let wire = wire_of(|w| {
            w.extend_from_slice(&[0x10, 0, 0, 0, 0, 0, 0, 0]);
            w.extend_from_slice(b"0000000030A0");
        });
        let text = decode_error(&DEFAULT, &wire).to_string();
        assert_eq!(
            text,
            "field 4 at byte 12: byte 0x41 at position 10 of a numeric field is not a digit"
        );
    }

    #[test]
    fn content_error_keeps_later_fields_for_a_code_30_answer() {
        // Fields 4 (bad) and 11.
        let wire = wire_of(|w| {
            w.extend_from_slice(&[0x10, 0x20, 0, 0, 0, 0, 0, 0]);
            w.extend_from_slice(b"00000000ABCD000777");
        });
        match DEFAULT.decode_partial(&wire) {
            PartialDecode::Malformed { message, error } => {
                assert_eq!(message.get(11), Some(&b"000777"[..]));
                assert_eq!(error.part, Part::Field(4));
                assert!(error.kind.is_content());
            }
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn hex_bitmap_dialect_rejects_bad_hex_bitmap() {
        let error = decode_error(&ASCII_HEX_BITMAP, b"0800ZZ00000000000000");
        assert_eq!(error.part, Part::PrimaryBitmap);
        assert_eq!(error.kind, DecodeErrorKind::BadBitmap);
    }

    #[test]
    fn encode_errors_leave_output_untouched() {
        let cases: Vec<(u8, &[u8], EncodeError)> = vec![
            (
                4,
                b"123",
                EncodeError::WrongLength {
                    field: 4,
                    expected: 12,
                    actual: 3,
                },
            ),
            (
                2,
                b"40000000000000000000",
                EncodeError::TooLong {
                    field: 2,
                    max: 19,
                    actual: 20,
                },
            ),
            (
                11,
                b"00012A",
                EncodeError::BadContent {
                    field: 11,
                    byte: b'A',
                    position: 5,
                },
            ),
        ];
        for (field, value, expected) in cases {
            let mut m = Message::new(Mti(*b"0110"));
            m.set(field, value);
            let mut out = b"keep".to_vec();
            assert_eq!(DEFAULT.encode(&m, &mut out), Err(expected));
            assert_eq!(out, b"keep");
        }
    }

    #[test]
    fn default_decode_borrows_values() {
        let mut wire = Vec::new();
        DEFAULT.encode(&sample(), &mut wire).unwrap();
        let decoded = DEFAULT.decode(&wire).unwrap();
        let range = wire.as_ptr_range();
        for (_, value) in decoded.fields() {
            assert!(
                range.contains(&value.as_ptr()),
                "value copied instead of borrowed"
            );
        }
    }
}
