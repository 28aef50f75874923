//! Primary account numbers: Luhn-valid by construction, masked whenever shown.

use std::fmt;

/// A PAN of 12 to 19 digits that passed the Luhn check. Stored as a number plus its length
/// (19 digits fit a `u64`), so it is `Copy` and hashing it allocates nothing.
///
/// `Display` and `Debug` both mask it (first 6 and last 4 digits): there is no way to print a
/// full PAN by accident. [`Pan::digits`] gives the digits to code that must send them on.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pan {
    value: u64,
    len: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PanError {
    #[error("PAN length {0} is outside 12..=19")]
    Length(usize),
    #[error("PAN contains a non-digit")]
    NotDigits,
    #[error("PAN fails the Luhn check")]
    Luhn,
}

pub const PAN_LEN_MIN: usize = 12;
pub const PAN_LEN_MAX: usize = 19;

/// The Luhn check digit for `payload` (the PAN without its last digit), as a value 0-9.
pub fn luhn_check_digit(payload: &[u8]) -> u8 {
    let sum: u32 = payload
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d - b'0');
            if i % 2 == 0 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    // (10 - sum % 10) % 10 is below 10.
    ((10 - sum % 10) % 10) as u8
}

impl Pan {
    pub fn parse(ascii: &[u8]) -> Result<Pan, PanError> {
        if !(PAN_LEN_MIN..=PAN_LEN_MAX).contains(&ascii.len()) {
            return Err(PanError::Length(ascii.len()));
        }
        if !ascii.iter().all(u8::is_ascii_digit) {
            return Err(PanError::NotDigits);
        }
        let (payload, check) = ascii.split_at(ascii.len() - 1);
        if luhn_check_digit(payload) != check[0] - b'0' {
            return Err(PanError::Luhn);
        }
        let value = ascii
            .iter()
            .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
        let len = u8::try_from(ascii.len()).map_err(|_| PanError::Length(ascii.len()))?;
        Ok(Pan { value, len })
    }

    /// The PAN made of `prefix` digits, `index` zero-padded to `index_digits`, and the Luhn
    /// digit: the demo account scheme (`400000` + 9-digit index + check digit).
    pub fn from_scheme(prefix: &str, index: u64, index_digits: usize) -> Result<Pan, PanError> {
        let mut ascii = format!("{prefix}{index:0index_digits$}");
        let check = luhn_check_digit(ascii.as_bytes());
        ascii.push(char::from(b'0' + check));
        Pan::parse(ascii.as_bytes())
    }

    /// The digits, for code that must send the PAN on (an issuer link). Never log this.
    pub fn digits(&self) -> ([u8; PAN_LEN_MAX], usize) {
        let mut out = [b'0'; PAN_LEN_MAX];
        let len = usize::from(self.len);
        let mut rest = self.value;
        for slot in out[..len].iter_mut().rev() {
            *slot = b"0123456789"[(rest % 10) as usize];
            rest /= 10;
        }
        (out, len)
    }

    /// Whether the PAN starts with the ASCII digits `prefix`.
    pub fn starts_with(&self, prefix: &[u8]) -> bool {
        let (digits, len) = self.digits();
        digits[..len].starts_with(prefix)
    }

    /// A stable 64-bit mix of the PAN, for choosing a shard. Stable across runs and builds.
    pub fn shard_hash(&self) -> u64 {
        // SplitMix64 finaliser: cheap, and spreads consecutive demo PANs evenly.
        let mut z = self.value ^ (u64::from(self.len) << 59);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The last four digits, which may be shown and stored in clear.
    pub fn last_four(&self) -> u16 {
        (self.value % 10_000) as u16
    }
}

impl fmt::Display for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (digits, len) = self.digits();
        for (i, &d) in digits[..len].iter().enumerate() {
            let shown = if i < 6 || i >= len - 4 {
                char::from(d)
            } else {
                '*'
            };
            write!(f, "{shown}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pan({self})")
    }
}

/// What the ledger, the WAL and snapshots know of a card: a keyed 128-bit hash of the PAN and
/// its last four digits. Without the key the token cannot be tied to a PAN, even by trying every
/// PAN of a BIN; with it, the switch maps each incoming PAN to its account.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, bincode::Encode, bincode::Decode)]
pub struct CardToken {
    pub hash: u128,
    pub last_four: u16,
}

impl CardToken {
    /// A stable 64-bit mix for choosing a shard (the hash is already uniform).
    pub fn shard_hash(&self) -> u64 {
        // Folding the two halves keeps every bit of the hash. Both halves fit a u64.
        let low = u64::try_from(self.hash & u128::from(u64::MAX)).unwrap_or(0);
        let high = u64::try_from(self.hash >> 64).unwrap_or(0);
        low ^ high
    }
}

impl fmt::Debug for CardToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "card …{:04} #{:08x}",
            self.last_four,
            u32::try_from(self.hash >> 96).unwrap_or(0)
        )
    }
}

impl fmt::Display for CardToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Turns PANs into [`CardToken`]s with a secret key (SipHash-1-3, 128-bit output: a keyed PRF,
/// fast enough for the hot path).
#[derive(Clone)]
pub struct Tokenizer {
    key: [u8; 16],
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tokenizer(<key>)")
    }
}

impl Tokenizer {
    pub fn new(key: [u8; 16]) -> Tokenizer {
        Tokenizer { key }
    }

    pub fn token(&self, pan: &Pan) -> CardToken {
        use siphasher::sip128::Hasher128;
        use std::hash::Hasher;
        let mut hasher = siphasher::sip128::SipHasher13::new_with_key(&self.key);
        let (digits, len) = pan.digits();
        hasher.write(&digits[..len]);
        CardToken {
            hash: hasher.finish128().as_u128(),
            last_four: pan.last_four(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_cases() {
        let cases: [(&str, Result<(), PanError>); 7] = [
            ("4000000000000002", Ok(())),
            ("4111111111111111", Ok(())),
            ("4000000000000003", Err(PanError::Luhn)),
            ("40000000002", Err(PanError::Length(11))),
            ("40000000000000000000", Err(PanError::Length(20))),
            ("400000000000000A", Err(PanError::NotDigits)),
            ("9999999999999999998", Ok(())),
        ];
        for (text, expected) in cases {
            assert_eq!(Pan::parse(text.as_bytes()).map(|_| ()), expected, "{text}");
        }
    }

    #[test]
    fn demo_scheme_gives_the_documented_pans() {
        let cases = [
            (0, "4000000000000002"),
            (1, "4000000000000010"),
            (2, "4000000000000028"),
            (4, "4000000000000044"),
        ];
        for (index, expected) in cases {
            let pan = Pan::from_scheme("400000", index, 9).unwrap();
            let (digits, len) = pan.digits();
            assert_eq!(&digits[..len], expected.as_bytes(), "index {index}");
        }
    }

    #[test]
    fn display_and_debug_mask_the_middle() {
        let pan = Pan::parse(b"4000000000000028").unwrap();
        assert_eq!(pan.to_string(), "400000******0028");
        assert_eq!(format!("{pan:?}"), "Pan(400000******0028)");
        assert_eq!(pan.last_four(), 28);
    }

    #[test]
    fn tokens_depend_on_the_key_and_show_only_the_last_four() {
        let pan = Pan::parse(b"4000000000000028").unwrap();
        let a = Tokenizer::new([1; 16]).token(&pan);
        let b = Tokenizer::new([2; 16]).token(&pan);
        assert_ne!(a.hash, b.hash);
        assert_eq!(a, Tokenizer::new([1; 16]).token(&pan));
        let shown = format!("{a:?}");
        assert!(shown.starts_with("card …0028 #"), "{shown}");
        assert!(!shown.contains("400000"), "{shown}");
    }

    #[test]
    fn leading_zeros_are_kept() {
        let pan = Pan::from_scheme("000001", 5, 9).unwrap();
        let (digits, len) = pan.digits();
        assert_eq!(len, 16);
        assert!(digits.starts_with(b"000001"));
        assert!(pan.starts_with(b"0000"));
    }
}
