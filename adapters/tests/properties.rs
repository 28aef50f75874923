//! Property tests: decode(encode(m)) == m for generated messages in every dialect, and no byte
//! sequence makes a decoder or the framing panic.

#![allow(clippy::unwrap_used)] // a failed unwrap in a test helper is a test failure, as intended

use adapters::dialect::{Content, Length};
use adapters::{DialectName, FrameHeader, Message, Mti};
use proptest::prelude::*;

/// A valid value for `field`, as every dialect's table allows it.
fn value_for(dialect: DialectName, field: u8) -> BoxedStrategy<Vec<u8>> {
    let spec = dialect.dialect().field(field);
    let (min, max) = match spec.length {
        Length::Fixed(n) => (usize::from(n), usize::from(n)),
        Length::Ll(n) | Length::Lll(n) => (0, usize::from(n)),
    };
    match spec.content {
        Content::Numeric => proptest::collection::vec(b'0'..=b'9', min..=max).boxed(),
        Content::Track2 => {
            proptest::collection::vec(prop_oneof![9 => b'0'..=b'9', 1 => Just(b'=')], min..=max)
                .boxed()
        }
        Content::Text => proptest::collection::vec(b' '..=b'~', min..=max).boxed(),
        Content::Binary => proptest::collection::vec(any::<u8>(), min..=max).boxed(),
    }
}

fn message(dialect: DialectName) -> impl Strategy<Value = Message<'static>> {
    let mti = proptest::array::uniform4(b'0'..=b'9');
    let fields = proptest::collection::btree_set(2u8..=128, 0..24).prop_flat_map(move |numbers| {
        let values: Vec<_> = numbers
            .iter()
            .map(|&n| value_for(dialect, n).prop_map(move |v| (n, v)))
            .collect();
        values
    });
    (mti, fields).prop_map(|(mti, fields)| {
        let mut message = Message::new(Mti(mti));
        for (n, v) in fields {
            message.set(n, v);
        }
        message
    })
}

fn check_round_trip(name: DialectName, message: &Message<'static>) -> Result<(), TestCaseError> {
    let mut wire = Vec::new();
    name.dialect()
        .encode(message, &mut wire)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let decoded = name.dialect().decode(&wire).map(Message::into_owned);
    prop_assert_eq!(decoded.as_ref(), Ok(message), "{}", name);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decode_of_encode_is_identity_in_default(message in message(DialectName::Default)) {
        check_round_trip(DialectName::Default, &message)?;
    }

    #[test]
    fn decode_of_encode_is_identity_in_ascii_hex_bitmap(message in message(DialectName::AsciiHexBitmap)) {
        check_round_trip(DialectName::AsciiHexBitmap, &message)?;
    }

    #[test]
    fn decode_of_encode_is_identity_in_bcd(message in message(DialectName::Bcd)) {
        check_round_trip(DialectName::Bcd, &message)?;
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        for name in DialectName::ALL {
            let _ = name.dialect().decode_partial(&bytes);
        }
        for header in [FrameHeader::Binary2, FrameHeader::Ascii4] {
            let _ = header.parse(&bytes, 8192);
        }
    }

    #[test]
    fn truncating_a_valid_message_gives_an_error_not_a_panic(message in message(DialectName::Default), cut in any::<prop::sample::Index>()) {
        let mut wire = Vec::new();
        DialectName::Default.dialect().encode(&message, &mut wire).unwrap();
        let cut = cut.index(wire.len());
        prop_assert!(DialectName::Default.dialect().decode(&wire[..cut]).is_err());
    }
}
