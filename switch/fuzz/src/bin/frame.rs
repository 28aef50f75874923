//! Frame reading: both length headers over arbitrary bytes with a small frame limit, frame
//! after frame as the session reads them. It must never panic, never announce a frame longer
//! than the limit, and always make progress.

use adapters::FrameHeader;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Some((&selector, bytes)) = data.split_first() else {
            return;
        };
        let framing = if selector & 1 == 0 {
            FrameHeader::Binary2
        } else {
            FrameHeader::Ascii4
        };
        let max = usize::from(selector >> 1) * 64 + 1;
        let mut at = 0;
        while at < bytes.len() {
            match framing.parse(&bytes[at..], max) {
                Ok(Some(bounds)) => {
                    assert!(bounds.total_len() > 0, "no progress");
                    assert!(
                        bounds.total_len() - bounds.header_len <= max,
                        "over the limit"
                    );
                    at += bounds.total_len();
                }
                Ok(None) | Err(_) => break,
            }
        }
    });
}
