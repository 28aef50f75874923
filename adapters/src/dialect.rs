//! Dialects are data: a table of 128 field definitions plus the MTI and bitmap encodings.
//!
//! A field's *value* in a [`Message`](crate::Message) is ASCII characters for numeric and text
//! fields and raw bytes for binary fields, the same in every dialect but one exception:
//! `ascii-hex-bitmap` carries the binary fields (52, 55, 64, 65, 96, 128) as text of twice the
//! length, unchecked, exactly as pyiso8583's `default_ascii` does (moov-io's test data puts
//! non-hex text in field 55). So a message without binary fields re-encodes in any dialect.

use std::fmt;
use std::str::FromStr;

/// How long a field is, in logical units: characters for numeric and text fields, bytes for
/// binary fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Length {
    Fixed(u16),
    /// Variable, with a 2-digit length prefix.
    Ll(u16),
    /// Variable, with a 3-digit length prefix.
    Lll(u16),
}

impl Length {
    pub const fn max(self) -> u16 {
        match self {
            Length::Fixed(n) | Length::Ll(n) | Length::Lll(n) => n,
        }
    }
}

/// What a field's value may contain; checked on decode and encode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Content {
    /// ASCII digits `0-9`.
    Numeric,
    /// Track 2 data: digits and the separator `=` (or `D`).
    Track2,
    /// Any bytes, carried as they are (ISO `an`, `ans`, `x+n`).
    Text,
    /// Raw bytes (PIN block, MAC, ICC data).
    Binary,
}

/// How a value is written on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// The value's bytes as they are.
    Raw,
    /// Packed BCD, two digits a byte; an odd count is padded with a zero nibble on the left.
    BcdLeft,
    /// Packed BCD, padded with a zero nibble on the right (jPOS `IFB_LLNUM` unpadded, field 2).
    BcdRight,
}

/// How the length prefix of a variable field is written; it counts units of the encoding
/// (bytes for `Raw`, digits for BCD).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefix {
    Ascii,
    Bcd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldSpec {
    pub length: Length,
    pub content: Content,
    pub encoding: Encoding,
    pub prefix: Prefix,
}

/// How the MTI and bitmaps are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderEncoding {
    /// MTI as 4 ASCII digits, bitmaps as 8 raw bytes.
    AsciiMtiBinaryBitmap,
    /// MTI as 4 ASCII digits, bitmaps as 16 upper-case hex characters.
    AsciiMtiHexBitmap,
    /// MTI as 2 bytes of BCD, bitmaps as 8 raw bytes.
    BcdMtiBinaryBitmap,
}

/// The dialects the switch ships; a listener or channel names one in config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DialectName {
    /// pyiso8583 `default`: binary bitmaps, ASCII fields and ASCII length prefixes.
    Default,
    /// pyiso8583 `default_ascii`: bitmaps and binary fields as hex text.
    AsciiHexBitmap,
    /// Binary bitmap, BCD numerics and BCD length prefixes (jPOS `ISO87BPackager`).
    Bcd,
}

impl DialectName {
    pub const ALL: [DialectName; 3] = [
        DialectName::Default,
        DialectName::AsciiHexBitmap,
        DialectName::Bcd,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            DialectName::Default => "default",
            DialectName::AsciiHexBitmap => "ascii-hex-bitmap",
            DialectName::Bcd => "bcd",
        }
    }

    pub fn dialect(self) -> &'static Dialect {
        match self {
            DialectName::Default => &DEFAULT,
            DialectName::AsciiHexBitmap => &ASCII_HEX_BITMAP,
            DialectName::Bcd => &BCD,
        }
    }
}

impl fmt::Display for DialectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DialectName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DialectName::ALL.into_iter().find(|d| d.as_str() == s).ok_or_else(|| {
            format!("unknown dialect {s:?}; expected one of \"default\", \"ascii-hex-bitmap\", \"bcd\"")
        })
    }
}

/// A dialect: header encoding plus one definition per field 2..=128 (index 0 and 1 unused:
/// the MTI and the secondary bitmap are handled by the header encoding).
#[derive(Debug)]
pub struct Dialect {
    pub name: DialectName,
    pub header: HeaderEncoding,
    pub fields: [FieldSpec; 129],
}

impl Dialect {
    /// The definition of `field` (2..=128).
    pub fn field(&self, field: u8) -> &FieldSpec {
        &self.fields[usize::from(field)]
    }
}

/// The ISO 8583:1987 field table shared by every dialect: length and content class.
/// Lengths follow pyiso8583's `default` spec exactly.
const fn iso87(field: usize) -> (Length, Content) {
    use Content::*;
    use Length::*;
    match field {
        2 => (Ll(19), Numeric),
        3 => (Fixed(6), Numeric),
        4..=6 => (Fixed(12), Numeric),
        7 => (Fixed(10), Numeric),
        8..=10 => (Fixed(8), Numeric),
        11 | 12 => (Fixed(6), Numeric),
        13..=18 => (Fixed(4), Numeric),
        19..=24 => (Fixed(3), Numeric),
        25 | 26 => (Fixed(2), Numeric),
        27 => (Fixed(1), Numeric),
        28..=31 => (Fixed(9), Text),
        32 | 33 => (Ll(11), Numeric),
        34 => (Ll(28), Text),
        35 => (Ll(37), Track2),
        36 => (Lll(104), Text),
        37 => (Fixed(12), Text),
        38 => (Fixed(6), Text),
        39 => (Fixed(2), Text),
        40 => (Fixed(3), Text),
        41 => (Fixed(8), Text),
        42 => (Fixed(15), Text),
        43 => (Fixed(40), Text),
        44 => (Ll(25), Text),
        45 => (Ll(76), Text),
        46..=48 => (Lll(999), Text),
        49..=51 => (Fixed(3), Text),
        52 | 64 | 65 | 96 | 128 => (Fixed(8), Binary),
        53 => (Fixed(16), Numeric),
        54 => (Lll(240), Text),
        55 => (Lll(255), Binary),
        56..=63 => (Lll(999), Text),
        66 => (Fixed(1), Numeric),
        67 => (Fixed(2), Numeric),
        68..=70 => (Fixed(3), Numeric),
        71 | 72 => (Fixed(4), Numeric),
        73 => (Fixed(6), Numeric),
        74..=81 => (Fixed(10), Numeric),
        82..=85 => (Fixed(12), Numeric),
        86..=89 => (Fixed(16), Numeric),
        90 => (Fixed(42), Numeric),
        91 => (Fixed(1), Text),
        92 => (Fixed(2), Text),
        93 => (Fixed(5), Text),
        94 => (Fixed(7), Text),
        95 => (Fixed(42), Text),
        97 => (Fixed(17), Text),
        98 => (Fixed(25), Text),
        99 | 100 => (Ll(11), Numeric),
        101 => (Ll(17), Text),
        102 | 103 => (Ll(28), Text),
        104 => (Lll(100), Text),
        _ => (Lll(999), Text),
    }
}

const fn build(header: HeaderEncoding, name: DialectName) -> Dialect {
    let unused = FieldSpec {
        length: Length::Fixed(0),
        content: Content::Binary,
        encoding: Encoding::Raw,
        prefix: Prefix::Ascii,
    };
    let mut fields = [unused; 129];
    let mut i = 2;
    while i <= 128 {
        let (mut length, mut content) = iso87(i);
        let (encoding, prefix) = match name {
            DialectName::Default => (Encoding::Raw, Prefix::Ascii),
            DialectName::AsciiHexBitmap => {
                if let Content::Binary = content {
                    content = Content::Text;
                    length = match length {
                        Length::Fixed(n) => Length::Fixed(2 * n),
                        Length::Ll(n) => Length::Ll(2 * n),
                        Length::Lll(n) => Length::Lll(2 * n),
                    };
                }
                (Encoding::Raw, Prefix::Ascii)
            }
            // jPOS ISO87BPackager: numerics packed BCD (field 2 right-padded, the others
            // left-padded), text as ASCII, every length prefix BCD.
            DialectName::Bcd => match content {
                Content::Numeric | Content::Track2 if i == 2 => (Encoding::BcdRight, Prefix::Bcd),
                Content::Numeric | Content::Track2 => (Encoding::BcdLeft, Prefix::Bcd),
                _ => (Encoding::Raw, Prefix::Bcd),
            },
        };
        fields[i] = FieldSpec {
            length,
            content,
            encoding,
            prefix,
        };
        i += 1;
    }
    Dialect {
        name,
        header,
        fields,
    }
}

pub static DEFAULT: Dialect = build(HeaderEncoding::AsciiMtiBinaryBitmap, DialectName::Default);
pub static ASCII_HEX_BITMAP: Dialect = build(
    HeaderEncoding::AsciiMtiHexBitmap,
    DialectName::AsciiHexBitmap,
);
pub static BCD: Dialect = build(HeaderEncoding::BcdMtiBinaryBitmap, DialectName::Bcd);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialect_names_round_trip_and_unknown_is_explained() {
        for name in DialectName::ALL {
            assert_eq!(name.as_str().parse::<DialectName>(), Ok(name));
            assert_eq!(name.dialect().name, name);
        }
        let error = "ebcdic".parse::<DialectName>().unwrap_err();
        assert!(
            error.contains("ebcdic") && error.contains("ascii-hex-bitmap"),
            "{error}"
        );
    }

    #[test]
    fn table_matches_pyiso8583_default_for_sample_fields() {
        use Content::*;
        use Encoding::*;
        use Length::*;
        // (field, dialect, length, content, encoding, prefix)
        let cases = [
            (2, &DEFAULT, Ll(19), Numeric, Raw, Prefix::Ascii),
            (2, &BCD, Ll(19), Numeric, BcdRight, Prefix::Bcd),
            (4, &ASCII_HEX_BITMAP, Fixed(12), Numeric, Raw, Prefix::Ascii),
            (4, &BCD, Fixed(12), Numeric, BcdLeft, Prefix::Bcd),
            (35, &BCD, Ll(37), Track2, BcdLeft, Prefix::Bcd),
            (43, &BCD, Fixed(40), Text, Raw, Prefix::Bcd),
            (52, &DEFAULT, Fixed(8), Binary, Raw, Prefix::Ascii),
            (52, &ASCII_HEX_BITMAP, Fixed(16), Text, Raw, Prefix::Ascii),
            (55, &DEFAULT, Lll(255), Binary, Raw, Prefix::Ascii),
            (55, &ASCII_HEX_BITMAP, Lll(510), Text, Raw, Prefix::Ascii),
            (90, &BCD, Fixed(42), Numeric, BcdLeft, Prefix::Bcd),
            (128, &BCD, Fixed(8), Binary, Raw, Prefix::Bcd),
        ];
        for (field, dialect, length, content, encoding, prefix) in cases {
            let spec = dialect.field(field);
            assert_eq!(
                (spec.length, spec.content, spec.encoding, spec.prefix),
                (length, content, encoding, prefix),
                "field {field} of {}",
                dialect.name
            );
        }
    }
}
