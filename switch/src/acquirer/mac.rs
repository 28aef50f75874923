//! The MAC of an acquirer's messages (DESIGN §2.6): the first 8 bytes of AES-128-CMAC (NIST SP
//! 800-38B) over the encoded message that precedes the MAC field, which is the last field:
//! field 64, or field 128 when a secondary bitmap is present. Network management carries none.
//! In a dialect that carries binary fields as hex text, the field holds those 8 bytes in hex.

use aes::Aes128;
use cmac::{Cmac, Mac};

/// An acquirer's MAC key (`mac_key`). Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct MacKey(pub [u8; 16]);

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey(<secret>)")
    }
}

/// The first 8 bytes of AES-CMAC of `data`.
pub fn cmac8(key: &MacKey, data: &[u8]) -> [u8; 8] {
    let mut mac = <Cmac<Aes128> as cmac::digest::KeyInit>::new(&key.0.into());
    mac.update(data);
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; 8];
    out.copy_from_slice(&full[..8]);
    out
}

/// The MAC field of a message with these fields present: 128 when any field above 64 is.
pub fn mac_field(highest_field: u8) -> u8 {
    if highest_field > 64 { 128 } else { 64 }
}

fn hex(bytes: &[u8; 8]) -> [u8; 16] {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = [0u8; 16];
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0x0F)];
    }
    out
}

/// Whether `body` (a whole encoded message) ends in the MAC `value` of its MAC field, correct
/// for `key`. `value` is the field as decoded: 8 bytes, or 16 hex digits.
pub fn verify(key: &MacKey, body: &[u8], value: &[u8]) -> bool {
    let Some(data) = body.len().checked_sub(value.len()).map(|n| &body[..n]) else {
        return false;
    };
    if !body.ends_with(value) {
        return false;
    }
    let expected = cmac8(key, data);
    // In constant time; hex digits in either case, raw bytes exactly.
    let differ = |a: &[u8], b: &[u8], fold: fn(u8) -> u8| {
        a.iter()
            .zip(b)
            .fold(0u8, |d, (x, y)| d | (fold(*x) ^ fold(*y)))
    };
    match value.len() {
        8 => differ(&expected, value, |b| b) == 0,
        16 => {
            value.iter().all(u8::is_ascii_hexdigit)
                && differ(&hex(&expected), value, |b| b.to_ascii_uppercase()) == 0
        }
        _ => false,
    }
}

/// Writes the MAC into the last `len` bytes of `body` (the MAC field's place, 8 bytes or 16 hex
/// digits), computed over what precedes them.
pub fn sign(key: &MacKey, body: &mut [u8], len: usize) {
    let Some(at) = body.len().checked_sub(len) else {
        return;
    };
    let mac = cmac8(key, &body[..at]);
    match len {
        8 => body[at..].copy_from_slice(&mac),
        16 => body[at..].copy_from_slice(&hex(&mac)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// NIST SP 800-38B, appendix D.1 (AES-128), as RFC 4493 repeats them: the full tags'
    /// first 8 bytes.
    #[test]
    fn nist_sp_800_38b_aes128_examples() {
        let key = MacKey(
            unhex("2b7e151628aed2a6abf7158809cf4f3c")
                .try_into()
                .unwrap(),
        );
        let message = unhex(
            "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710",
        );
        let cases: [(usize, &str); 4] = [
            (0, "bb1d6929e95937287fa37d129b756746"),
            (16, "070a16b46b4d4144f79bdd9dd04a287c"),
            (40, "dfa66747de9ae63030ca32611497c827"),
            (64, "51f0bebf7e3b9d92fc49741779363cfe"),
        ];
        for (len, tag) in cases {
            assert_eq!(
                cmac8(&key, &message[..len]).to_vec(),
                unhex(&tag[..16]),
                "{len} bytes"
            );
        }
    }

    #[test]
    fn sign_then_verify_in_both_forms_and_flipped_bits_fail() {
        let key = MacKey([7; 16]);
        for len in [8usize, 16] {
            let mut body = b"0100 some encoded message".to_vec();
            body.extend(std::iter::repeat_n(0u8, len));
            sign(&key, &mut body, len);
            let value = body[body.len() - len..].to_vec();
            assert!(verify(&key, &body, &value), "{len}");
            let mut damaged = body.clone();
            damaged[3] ^= 1;
            assert!(!verify(&key, &damaged, &value));
            let mut wrong = value.clone();
            wrong[0] ^= 1;
            assert!(!verify(&key, &body, &wrong));
            assert!(!verify(&MacKey([8; 16]), &body, &value), "another key");
        }
        // Raw bytes compare exactly: flipping bit 5 (ASCII case) of a byte is another MAC.
        let mut body = b"0100 bytes".to_vec();
        body.extend([0u8; 8]);
        sign(&key, &mut body, 8);
        let at = body.len() - 8;
        let mut value = body[at..].to_vec();
        value[0] ^= 0x20;
        let mut cased = body.clone();
        cased[at..].copy_from_slice(&value);
        assert!(!verify(&key, &cased, &value));
        assert_eq!(mac_field(49), 64);
        assert_eq!(mac_field(90), 128);
    }
}
