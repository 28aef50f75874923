//! Frame boundaries on a byte stream: a length header, then that many message bytes.
//!
//! The header counts the bytes that follow it, not itself. A zero-length frame is a
//! keep-alive. A frame longer than the configured maximum is refused from its header alone,
//! before the reader reserves any memory for it.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameHeader {
    /// 2 bytes, big-endian (the default).
    Binary2,
    /// 4 ASCII digits.
    Ascii4,
}

/// Where the next frame lies in a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameBounds {
    pub header_len: usize,
    pub body_len: usize,
}

impl FrameBounds {
    pub fn total_len(&self) -> usize {
        self.header_len + self.body_len
    }

    pub fn is_keep_alive(&self) -> bool {
        self.body_len == 0
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {length} bytes exceeds max_frame_bytes = {max}")]
    TooLarge { length: usize, max: usize },
    #[error("length header {0:?} is not 4 ASCII digits")]
    BadAsciiHeader(String),
    #[error("message of {length} bytes does not fit a {header} header (at most {limit})")]
    Unrepresentable {
        length: usize,
        header: FrameHeader,
        limit: usize,
    },
}

impl FrameHeader {
    pub const fn header_len(self) -> usize {
        match self {
            FrameHeader::Binary2 => 2,
            FrameHeader::Ascii4 => 4,
        }
    }

    /// The largest body this header can describe.
    pub const fn body_len_limit(self) -> usize {
        match self {
            FrameHeader::Binary2 => u16::MAX as usize,
            FrameHeader::Ascii4 => 9999,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            FrameHeader::Binary2 => "binary2",
            FrameHeader::Ascii4 => "ascii4",
        }
    }

    /// The bounds of the frame at the start of `buffer`, or `Ok(None)` when the buffer does not
    /// hold all of it yet.
    pub fn parse(
        self,
        buffer: &[u8],
        max_body_len: usize,
    ) -> Result<Option<FrameBounds>, FrameError> {
        let header_len = self.header_len();
        let Some(header) = buffer.get(..header_len) else {
            return Ok(None);
        };
        let body_len = match self {
            FrameHeader::Binary2 => usize::from(u16::from_be_bytes([header[0], header[1]])),
            FrameHeader::Ascii4 => header
                .iter()
                .try_fold(0usize, |acc, &d| {
                    d.is_ascii_digit().then(|| acc * 10 + usize::from(d - b'0'))
                })
                .ok_or_else(|| {
                    FrameError::BadAsciiHeader(String::from_utf8_lossy(header).into_owned())
                })?,
        };
        if body_len > max_body_len {
            return Err(FrameError::TooLarge {
                length: body_len,
                max: max_body_len,
            });
        }
        let bounds = FrameBounds {
            header_len,
            body_len,
        };
        Ok((buffer.len() >= bounds.total_len()).then_some(bounds))
    }

    /// Writes the header for a body of `body_len` bytes into the first
    /// [`header_len`](Self::header_len) bytes of `header`: the placeholder a caller reserved at
    /// the front of a frame before encoding its body, so framing a message allocates nothing.
    pub fn fill(self, body_len: usize, header: &mut [u8]) -> Result<(), FrameError> {
        if body_len > self.body_len_limit() {
            return Err(FrameError::Unrepresentable {
                length: body_len,
                header: self,
                limit: self.body_len_limit(),
            });
        }
        let header = &mut header[..self.header_len()];
        match self {
            FrameHeader::Binary2 => {
                let length = u16::try_from(body_len).unwrap_or(u16::MAX);
                header.copy_from_slice(&length.to_be_bytes());
            }
            FrameHeader::Ascii4 => crate::codec::write_digits(body_len, header),
        }
        Ok(())
    }

    /// Appends the header for a body of `body_len` bytes.
    pub fn write(self, body_len: usize, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let mut header = [0u8; 4];
        self.fill(body_len, &mut header)?;
        out.extend_from_slice(&header[..self.header_len()]);
        Ok(())
    }

    /// Appends a whole frame: header, then `body`.
    pub fn write_frame(self, body: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        self.write(body.len(), out)?;
        out.extend_from_slice(body);
        Ok(())
    }
}

impl fmt::Display for FrameHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FrameHeader {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "binary2" => Ok(FrameHeader::Binary2),
            "ascii4" => Ok(FrameHeader::Ascii4),
            _ => Err(format!(
                "unknown framing {s:?}; expected \"binary2\" or \"ascii4\""
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        header: FrameHeader,
        buffer: &[u8],
        max: usize,
        expected: Result<Option<(usize, usize)>, FrameError>,
    ) {
        let got = header
            .parse(buffer, max)
            .map(|b| b.map(|b| (b.header_len, b.body_len)));
        assert_eq!(got, expected, "{header} {buffer:?}");
    }

    #[test]
    fn parse_cases() {
        use FrameHeader::*;
        check(Binary2, b"", 8192, Ok(None));
        check(Binary2, b"\x00", 8192, Ok(None));
        check(Binary2, b"\x00\x00", 8192, Ok(Some((2, 0))));
        check(Binary2, b"\x00\x03ab", 8192, Ok(None));
        check(Binary2, b"\x00\x03abcXYZ", 8192, Ok(Some((2, 3))));
        check(
            Binary2,
            b"\x20\x01",
            8192,
            Err(FrameError::TooLarge {
                length: 8193,
                max: 8192,
            }),
        );
        check(
            Binary2,
            b"\xFF\xFF",
            8192,
            Err(FrameError::TooLarge {
                length: 65535,
                max: 8192,
            }),
        );
        check(Ascii4, b"000", 8192, Ok(None));
        check(Ascii4, b"0003abc", 8192, Ok(Some((4, 3))));
        check(Ascii4, b"0000", 8192, Ok(Some((4, 0))));
        check(
            Ascii4,
            b"9000",
            8192,
            Err(FrameError::TooLarge {
                length: 9000,
                max: 8192,
            }),
        );
        check(
            Ascii4,
            b"00x1",
            8192,
            Err(FrameError::BadAsciiHeader("00x1".into())),
        );
    }

    #[test]
    fn write_then_parse_round_trips() {
        for header in [FrameHeader::Binary2, FrameHeader::Ascii4] {
            for body in [&b""[..], b"a", &[7u8; 300]] {
                let mut out = Vec::new();
                header.write_frame(body, &mut out).unwrap();
                let bounds = header.parse(&out, 8192).unwrap().unwrap();
                assert_eq!(&out[bounds.header_len..bounds.total_len()], body);
            }
        }
    }

    #[test]
    fn write_refuses_lengths_the_header_cannot_carry() {
        let mut out = Vec::new();
        assert_eq!(
            FrameHeader::Ascii4.write(10_000, &mut out),
            Err(FrameError::Unrepresentable {
                length: 10_000,
                header: FrameHeader::Ascii4,
                limit: 9999
            })
        );
        assert!(FrameHeader::Binary2.write(70_000, &mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn framing_names_parse() {
        assert_eq!("ascii4".parse(), Ok(FrameHeader::Ascii4));
        assert!(
            "ascii"
                .parse::<FrameHeader>()
                .unwrap_err()
                .contains("binary2")
        );
    }
}
