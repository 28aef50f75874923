//! What the switch sends an issuer and how it reads the answers. Pure functions of messages:
//! no I/O, no state.
//!
//! - A request forwarded to an issuer is the acquirer's, field for field, under the switch's
//!   own field 11 (unique per issuer among its outstanding requests), without the acquirer's
//!   MAC (64, 128) and PIN block (52): PIN translation needs an HSM, which is out of scope.
//!   Field 37 goes unchanged.
//! - A reversal the switch sends (0420) carries the original's fields 2, 3, 4, 7, 12, 13, 32,
//!   37, 41, 42, 49 and a field 90 naming the switch's own request to the issuer: original MTI,
//!   the switch's field 11, the original field 7, the acquirer (field 32, 11 digits) and
//!   zeros for the forwarding institution.
//! - Queued messages are kept in the log sealed ([`Sealer`]): they carry the card number.

use adapters::{Dialect, Message, Mti};
use aes_gcm_siv::aead::{Aead, KeyInit};
use aes_gcm_siv::{Aes128GcmSiv, Nonce};

use crate::domain::{Outcome, ResponseCode};

/// Fields of the acquirer's request never forwarded: its MACs (the issuer link has its own
/// security) and the PIN block (encrypted under the acquirer's key).
const NOT_FORWARDED: [u8; 3] = [52, 64, 128];
/// Fields a reversal or advice repeats from its original.
const ADVICE_FIELDS: [u8; 12] = [2, 3, 4, 7, 12, 13, 14, 18, 32, 37, 41, 42];

/// Field 11 as 6 digits.
pub fn stan_field(stan: u32) -> Vec<u8> {
    format!("{:06}", stan % 1_000_000).into_bytes()
}

/// The acquirer's `request` as it goes to the issuer under the switch's field 11 `stan`.
pub fn forward<'a>(request: &Message<'a>, stan: u32) -> Message<'a> {
    let mut out = Message::with_capacity(request.mti, request.field_count() + 1);
    for (field, value) in request.fields() {
        if !NOT_FORWARDED.contains(&field) {
            out.set(field, value.to_vec());
        }
    }
    out.set(11, stan_field(stan));
    out
}

/// Field 90 naming the switch's request `original_mti` / `stan` with the original's field 7
/// and acquirer.
pub fn original_data(
    original_mti: [u8; 4],
    stan: u32,
    transmission: u64,
    acquirer: u64,
) -> Vec<u8> {
    format!(
        "{}{:06}{:010}{:011}{:011}",
        String::from_utf8_lossy(&original_mti),
        stan % 1_000_000,
        transmission % 10_000_000_000,
        acquirer % 100_000_000_000,
        0
    )
    .into_bytes()
}

/// The reversal advice (0420, without field 11: set at each send) of the switch's request
/// `sent` (as it went to the issuer, field 11 included).
pub fn reversal_of(sent: &Message<'_>) -> Option<Message<'static>> {
    let stan = sent.get(11).and_then(digits)?;
    let transmission = sent.get(7).and_then(digits)?;
    let acquirer = sent.get(32).and_then(digits).unwrap_or(0);
    let mut out = Message::new(Mti(*b"0420"));
    copy(sent, &mut out, &ADVICE_FIELDS);
    if let Some(currency) = sent.get(49) {
        out.set(49, currency.to_vec());
    }
    out.set(
        90,
        original_data(
            sent.mti.0,
            u32::try_from(stan).ok()?,
            transmission,
            acquirer,
        ),
    );
    Some(out)
}

/// The authorization advice (0120) of a stand-in approval of `request` (the acquirer's),
/// with the switch's authorization code.
pub fn stand_in_advice(request: &Message<'_>, auth_id: [u8; 6]) -> Message<'static> {
    let mti = if request.mti.0[1] == b'2' {
        Mti(*b"0220")
    } else {
        Mti(*b"0120")
    };
    let mut out = Message::new(mti);
    for (field, value) in request.fields() {
        if !NOT_FORWARDED.contains(&field) && field != 11 && !matches!(field, 35 | 45 | 55) {
            out.set(field, value.to_vec());
        }
    }
    out.set(38, auth_id.to_vec());
    out.set(39, b"00".to_vec());
    out
}

/// The acquirer's reversal or completion `request` of a remote original that the switch sent
/// as `original_mti` / `original_stan`: the same message for the issuer, as an advice (a
/// 0400/0401 becomes 0420, a 0220 stays), field 90 naming the switch's request, without field
/// 11 (set at each send).
pub fn advice_of_acquirer_message(
    request: &Message<'_>,
    original_mti: [u8; 4],
    original_stan: u32,
    original_transmission: u64,
    acquirer: u64,
) -> Message<'static> {
    let mti = match request.mti.0[1] {
        b'4' => Mti(*b"0420"),
        _ => Mti(*b"0220"),
    };
    let mut out = Message::new(mti);
    for (field, value) in request.fields() {
        if !NOT_FORWARDED.contains(&field) && !matches!(field, 11 | 35 | 45 | 55 | 90) {
            out.set(field, value.to_vec());
        }
    }
    out.set(
        90,
        original_data(original_mti, original_stan, original_transmission, acquirer),
    );
    out
}

/// A queued advice as it goes out: its MTI a repeat's (0421, 0121, 0221) after the first
/// send, and field 11 `stan`.
pub fn advice_to_send(advice: &Message<'_>, repeat: bool, stan: u32) -> Message<'static> {
    let mut mti = advice.mti.0;
    if repeat {
        mti[3] = b'1';
    }
    let mut out = Message::with_capacity(Mti(mti), advice.field_count() + 1);
    for (field, value) in advice.fields() {
        out.set(field, value.to_vec());
    }
    out.set(11, stan_field(stan));
    out
}

/// The outcome an issuer's answer states: field 39 (a code the switch does not know is read
/// as 05, do not honour) and field 38.
pub fn outcome_of(answer: &Message<'_>) -> Outcome {
    let code = answer
        .get(39)
        .and_then(|c| <[u8; 2]>::try_from(c).ok())
        .and_then(ResponseCode::from_bytes)
        .unwrap_or(ResponseCode::DoNotHonor);
    let auth_id = if code.is_approved() {
        answer.get(38).and_then(|a| <[u8; 6]>::try_from(a).ok())
    } else {
        None
    };
    Outcome {
        code,
        auth_id,
        balances: None,
    }
}

/// The numeric value of ASCII digits (at most 19).
pub fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

fn copy(from: &Message<'_>, to: &mut Message<'static>, fields: &[u8]) {
    for &field in fields {
        if let Some(value) = from.get(field) {
            to.set(field, value.to_vec());
        }
    }
}

/// Seals queued messages for the log, and opens them again, with AES-128-GCM-SIV under a key
/// derived from `ledger.token_key` (AES-CMAC of a label). The nonce is the advice's id, unique
/// over the log's life; GCM-SIV stays safe even if one were ever reused.
pub struct Sealer(Aes128GcmSiv);

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<key>)")
    }
}

/// Domain separation: the token key also makes card tokens and fingerprints.
const SEAL_LABEL: &[u8] = b"switch advice seal v1";

impl Sealer {
    pub fn new(token_key: &[u8; 16]) -> Sealer {
        use cmac::{Cmac, Mac};
        let mut mac = <Cmac<aes::Aes128> as Mac>::new(token_key.into());
        mac.update(SEAL_LABEL);
        let key: [u8; 16] = mac.finalize().into_bytes().into();
        Sealer(Aes128GcmSiv::new(&key.into()))
    }

    fn nonce(id: u128) -> [u8; 12] {
        let bytes = id.to_be_bytes();
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&bytes[4..]);
        nonce
    }

    pub fn seal(&self, id: u128, message: &[u8]) -> Vec<u8> {
        let nonce = Sealer::nonce(id);
        // Encrypting into a Vec cannot fail but for a message over 64 GiB.
        self.0
            .encrypt(Nonce::from_slice(&nonce), message)
            .unwrap_or_default()
    }

    /// `None` if `sealed` was not sealed under this key for `id`.
    pub fn open(&self, id: u128, sealed: &[u8]) -> Option<Vec<u8>> {
        let nonce = Sealer::nonce(id);
        self.0.decrypt(Nonce::from_slice(&nonce), sealed).ok()
    }
}

/// Decodes `bytes` in `dialect`, owned.
pub fn decode_owned(dialect: &Dialect, bytes: &[u8]) -> Option<Message<'static>> {
    dialect.decode(bytes).ok().map(Message::into_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Message<'static> {
        let mut m = Message::new(Mti(*b"0100"));
        for (field, value) in [
            (2, "4111111111111111"),
            (3, "000000"),
            (4, "000000001000"),
            (7, "1130120000"),
            (11, "000042"),
            (32, "123456"),
            (37, "RRN000000001"),
            (41, "TERM0001"),
            (49, "840"),
        ] {
            m.set(field, value.as_bytes().to_vec());
        }
        m.set(52, vec![0xAA; 8]);
        m.set(64, vec![0xBB; 8]);
        m
    }

    #[test]
    fn a_forwarded_request_has_the_switch_stan_and_no_mac_or_pin_block() {
        let sent = forward(&request(), 7);
        assert_eq!(sent.get(11), Some(&b"000007"[..]));
        assert_eq!(sent.get(37), Some(&b"RRN000000001"[..]));
        assert_eq!(sent.get(2), Some(&b"4111111111111111"[..]));
        assert!(!sent.has(52) && !sent.has(64));
    }

    #[test]
    fn a_reversal_names_the_switch_request_in_field_90() {
        let sent = forward(&request(), 7);
        let reversal = reversal_of(&sent).unwrap();
        assert_eq!(reversal.mti, Mti(*b"0420"));
        assert_eq!(
            reversal.get(90),
            Some(&b"010000000711301200000000012345600000000000"[..])
        );
        assert_eq!(reversal.get(90).map(<[u8]>::len), Some(42));
        assert_eq!(reversal.get(37), Some(&b"RRN000000001"[..]));
        assert!(!reversal.has(11));
        let first = advice_to_send(&reversal, false, 8);
        let repeat = advice_to_send(&reversal, true, 9);
        assert_eq!((first.mti, repeat.mti), (Mti(*b"0420"), Mti(*b"0421")));
        assert_eq!(repeat.get(11), Some(&b"000009"[..]));
        assert_eq!(first.get(90), repeat.get(90));
    }

    #[test]
    fn answers_read_codes_and_authorization_codes() {
        let mut answer = Message::new(Mti(*b"0110"));
        answer.set(39, b"00".to_vec());
        answer.set(38, b"A1B2C3".to_vec());
        assert_eq!(outcome_of(&answer).auth_id, Some(*b"A1B2C3"));
        answer.set(39, b"51".to_vec());
        let declined = outcome_of(&answer);
        assert_eq!(
            (declined.code, declined.auth_id),
            (ResponseCode::InsufficientFunds, None)
        );
        answer.set(39, b"Q7".to_vec());
        assert_eq!(outcome_of(&answer).code, ResponseCode::DoNotHonor);
        answer.remove(39);
        assert_eq!(outcome_of(&answer).code, ResponseCode::DoNotHonor);
    }

    #[test]
    fn sealed_messages_open_only_with_their_key_and_id() {
        let sealer = Sealer::new(&[7; 16]);
        let sealed = sealer.seal(42, b"4111111111111111 and more");
        assert!(!sealed.windows(16).any(|w| w == b"4111111111111111"));
        assert_eq!(
            sealer.open(42, &sealed).as_deref(),
            Some(&b"4111111111111111 and more"[..])
        );
        assert_eq!(sealer.open(43, &sealed), None);
        assert_eq!(Sealer::new(&[8; 16]).open(42, &sealed), None);
        let mut flipped = sealed.clone();
        flipped[0] ^= 1;
        assert_eq!(sealer.open(42, &flipped), None);
    }
}
