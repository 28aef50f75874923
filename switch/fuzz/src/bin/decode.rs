//! Decoding in every dialect: the first byte picks the dialect. A message that decodes must
//! encode again, and what it encodes to must decode to the same message.

use adapters::DialectName;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Some((&selector, bytes)) = data.split_first() else {
            return;
        };
        let dialect = match selector % 3 {
            0 => DialectName::Default,
            1 => DialectName::AsciiHexBitmap,
            _ => DialectName::Bcd,
        }
        .dialect();
        let _ = dialect.decode_partial(bytes);
        let Ok(message) = dialect.decode(bytes) else {
            return;
        };
        let mut encoded = Vec::new();
        if dialect.encode(&message, &mut encoded).is_ok() {
            let again = dialect
                .decode(&encoded)
                .expect("what the codec encodes, it decodes");
            assert_eq!(
                again.fields().collect::<Vec<_>>(),
                message.fields().collect::<Vec<_>>(),
                "a round trip changed the message"
            );
            assert_eq!(again.mti, message.mti);
        }
    });
}
