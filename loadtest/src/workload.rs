//! What to send: the request mix, the account choice, and the requests themselves.

use std::collections::VecDeque;

use adapters::{Dialect, FrameHeader, Message, Mti};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Zipf};

/// Demo accounts used start at this index: the first thousand include the special cards
/// (100.00, 0.00, blocked, limited) whose declines a load run must not hit.
pub const FIRST_ACCOUNT: u64 = 1_000;
/// Earlier approvals each connection remembers for its reversals.
const REVERSIBLE_MAX: usize = 1_024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// 0100 of 0.01 to 0.09: a hold.
    Authorization,
    /// 0200 processing code 00 of 0.01 to 0.09.
    Purchase,
    /// 0200 processing code 31.
    Balance,
    /// 0400 of an earlier approved authorization or purchase of this connection.
    Reversal,
    /// 0100 of 0.01 to 0.09 on a card of the remote issuer (BIN 411111 in the demo routes):
    /// the issuer channel's path, beside the on-us one. Moves no on-us money.
    Remote,
}

impl Operation {
    pub fn name(self) -> &'static str {
        match self {
            Operation::Authorization => "auth",
            Operation::Purchase => "purchase",
            Operation::Balance => "balance",
            Operation::Reversal => "reversal",
            Operation::Remote => "remote",
        }
    }
}

/// Weights of each operation, e.g. `auth:70,purchase:20,balance:5,reversal:5`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mix {
    weights: Vec<(Operation, u32)>,
    total: u32,
}

impl std::str::FromStr for Mix {
    type Err = String;
    fn from_str(text: &str) -> Result<Mix, String> {
        let mut weights = Vec::new();
        for part in text.split(',') {
            let (name, weight) = part
                .split_once(':')
                .ok_or_else(|| format!("{part:?} is not NAME:WEIGHT"))?;
            let operation = match name.trim() {
                "auth" => Operation::Authorization,
                "purchase" => Operation::Purchase,
                "balance" => Operation::Balance,
                "reversal" => Operation::Reversal,
                "remote" => Operation::Remote,
                other => {
                    return Err(format!(
                        "unknown operation {other:?}; use auth, purchase, balance, reversal, remote"
                    ));
                }
            };
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("weight {weight:?} is not a whole number"))?;
            if weight > 0 {
                weights.push((operation, weight));
            }
        }
        let total = weights.iter().map(|(_, w)| w).sum();
        if total == 0 {
            return Err("the mix has no operation with a weight above 0".into());
        }
        Ok(Mix { weights, total })
    }
}

impl Mix {
    /// The operation for a uniform draw in `0..total()`.
    pub fn pick(&self, draw: u32) -> Operation {
        let mut draw = draw % self.total;
        for (operation, weight) in &self.weights {
            if draw < *weight {
                return *operation;
            }
            draw -= weight;
        }
        self.weights[0].0
    }

    pub fn total(&self) -> u32 {
        self.total
    }
}

/// Luhn check digit of ASCII digits.
fn luhn(payload: &[u8]) -> u8 {
    let sum: u32 = payload
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d - b'0');
            if i % 2 == 0 {
                if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
            } else {
                d
            }
        })
        .sum();
    b"0123456789"[((10 - sum % 10) % 10) as usize]
}

/// The demo PAN of `index`: 400000 + 9-digit index + Luhn digit.
pub fn demo_pan(index: u64) -> Vec<u8> {
    let mut pan = format!("400000{index:09}").into_bytes();
    pan.push(luhn(&pan));
    pan
}

/// A card of the demo's remote issuer (routed to `issuer:sim`).
pub fn remote_pan(index: u64) -> Vec<u8> {
    let mut pan = format!("411111{index:09}").into_bytes();
    pan.push(luhn(&pan));
    pan
}

/// Field 7 for now, in UTC (MMDDhhmmss).
pub fn transmission_now() -> Vec<u8> {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Civil date from days since 1970 (Howard Hinnant's algorithm).
    let z = i64::try_from(seconds / 86_400).unwrap_or(0) + 719_468;
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let t = seconds % 86_400;
    format!(
        "{month:02}{day:02}{:02}{:02}{:02}",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
    .into_bytes()
}

/// How accounts are chosen.
#[derive(Clone, Debug)]
pub enum Accounts {
    Uniform(u64),
    Zipf(Zipf<f64>),
}

impl Accounts {
    pub fn new(count: u64, zipf: Option<f64>) -> Result<Accounts, String> {
        if count == 0 {
            return Err("--accounts must be at least 1".into());
        }
        match zipf {
            None => Ok(Accounts::Uniform(count)),
            Some(s) => Zipf::new(count as f64, s)
                .map(Accounts::Zipf)
                .map_err(|e| format!("--zipf {s}: {e}")),
        }
    }

    /// An account index, `FIRST_ACCOUNT` and up.
    fn draw(&self, rng: &mut SmallRng) -> u64 {
        FIRST_ACCOUNT
            + match self {
                Accounts::Uniform(count) => rng.random_range(0..*count),
                Accounts::Zipf(zipf) => {
                    // Zipf draws whole numbers 1..=count as floats, so the cast is exact; the
                    // most popular account is the first.
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    let rank = zipf.sample(rng) as u64;
                    rank.saturating_sub(1)
                }
            }
    }
}

/// One request sent: what it was, for matching its answer and for the money check.
#[derive(Clone, Debug)]
pub struct Sent {
    pub operation: Operation,
    pub account: u64,
    pub amount: i64,
    /// For a reversal, what it reverses; for an approval, what a reversal would need.
    pub original: Option<Reversible>,
}

/// An approved authorization or purchase that a later reversal may name.
#[derive(Clone, Debug)]
pub struct Reversible {
    pub mti: [u8; 4],
    pub account: u64,
    pub amount: i64,
    pub stan: [u8; 6],
    pub transmission: Vec<u8>,
    pub terminal: Vec<u8>,
    pub processing: &'static [u8],
}

/// Builds one connection's requests.
#[derive(Debug)]
pub struct Generator {
    pub dialect: &'static Dialect,
    pub framing: FrameHeader,
    connection: usize,
    transmission: Vec<u8>,
    sequence: u64,
    mix: Mix,
    accounts: Accounts,
    rng: SmallRng,
    reversible: VecDeque<Reversible>,
}

impl Generator {
    pub fn new(
        dialect: &'static Dialect,
        framing: FrameHeader,
        connection: usize,
        mix: Mix,
        accounts: Accounts,
        seed: u64,
    ) -> Generator {
        Generator {
            dialect,
            framing,
            connection,
            transmission: transmission_now(),
            sequence: 0,
            mix,
            accounts,
            rng: SmallRng::seed_from_u64(
                seed ^ (connection as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ),
            reversible: VecDeque::new(),
        }
    }

    /// Remembers an approval for a later reversal.
    pub fn approved(&mut self, sent: &Sent) {
        if let Some(original) = &sent.original
            && sent.operation != Operation::Reversal
        {
            if self.reversible.len() == REVERSIBLE_MAX {
                self.reversible.pop_front();
            }
            self.reversible.push_back(original.clone());
        }
    }

    /// Appends the next request's frame to `out`; returns its STAN and what it was.
    pub fn next(&mut self, out: &mut Vec<u8>) -> Result<([u8; 6], Sent), String> {
        self.sequence += 1;
        let stan_value = self.sequence % 1_000_000;
        let mut stan = [b'0'; 6];
        stan.copy_from_slice(format!("{stan_value:06}").as_bytes());
        // A fresh terminal id for every million requests keeps identities unique in the run.
        let terminal = format!(
            "L{:03}{:04}",
            self.connection % 1000,
            (self.sequence / 1_000_000) % 10_000
        )
        .into_bytes();
        let mut operation = self.mix.pick(self.rng.random_range(0..self.mix.total()));
        if operation == Operation::Reversal && self.reversible.is_empty() {
            operation = Operation::Authorization;
        }
        let mut message;
        let sent = match operation {
            Operation::Reversal => {
                let index = self.rng.random_range(0..self.reversible.len());
                let original = self.reversible.remove(index).ok_or("reversible vanished")?;
                message = Message::new(Mti(*b"0400"));
                message.set(2, demo_pan(original.account));
                message.set(3, original.processing);
                message.set(4, format!("{:012}", original.amount).into_bytes());
                let mut field90 = original.mti.to_vec();
                field90.extend_from_slice(&original.stan);
                field90.extend_from_slice(&original.transmission);
                field90.extend_from_slice(b"00000123456");
                field90.extend_from_slice(b"00000000000");
                message.set(90, field90);
                // A reversal comes from the original's terminal.
                message.set(41, original.terminal.clone());
                Sent {
                    operation,
                    account: original.account,
                    amount: original.amount,
                    original: Some(original),
                }
            }
            _ => {
                let account = self.accounts.draw(&mut self.rng);
                let (mti, processing, amount): ([u8; 4], &'static [u8], i64) = match operation {
                    Operation::Authorization | Operation::Remote => {
                        (*b"0100", b"000000", 1 + self.rng.random_range(0..9))
                    }
                    Operation::Purchase => (*b"0200", b"000000", 1 + self.rng.random_range(0..9)),
                    _ => (*b"0200", b"310000", 0),
                };
                message = Message::new(Mti(mti));
                let remote = operation == Operation::Remote;
                message.set(
                    2,
                    if remote {
                        remote_pan(account)
                    } else {
                        demo_pan(account)
                    },
                );
                message.set(3, processing);
                message.set(4, format!("{amount:012}").into_bytes());
                message.set(41, terminal.clone());
                let reversible = !matches!(operation, Operation::Balance | Operation::Remote);
                let original = reversible.then(|| Reversible {
                    mti,
                    account,
                    amount,
                    stan,
                    transmission: self.transmission.clone(),
                    terminal: terminal.clone(),
                    processing,
                });
                Sent {
                    operation,
                    account,
                    amount,
                    original,
                }
            }
        };
        message.set(7, self.transmission.clone());
        message.set(11, stan.to_vec());
        message.set(14, &b"3012"[..]);
        message.set(32, &b"123456"[..]);
        message.set(49, &b"840"[..]);
        let start = out.len();
        out.extend_from_slice(&[0u8; 4][..self.framing.header_len()]);
        self.dialect
            .encode(&message, out)
            .map_err(|e| e.to_string())?;
        self.framing
            .fill(
                out.len() - start - self.framing.header_len(),
                &mut out[start..],
            )
            .map_err(|e| e.to_string())?;
        Ok((stan, sent))
    }
}

/// A balance inquiry for the money check, with its own terminal id.
pub fn balance_inquiry(
    dialect: &Dialect,
    framing: FrameHeader,
    account: u64,
    stan: u32,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let mut message = Message::new(Mti(*b"0200"));
    message.set(2, demo_pan(account));
    message.set(3, &b"310000"[..]);
    message.set(7, transmission_now());
    message.set(11, format!("{:06}", stan % 1_000_000).into_bytes());
    message.set(32, &b"123456"[..]);
    message.set(
        41,
        format!("Q{:07}", stan / 1_000_000 % 10_000_000).into_bytes(),
    );
    let mut body = Vec::new();
    dialect
        .encode(&message, &mut body)
        .map_err(|e| e.to_string())?;
    framing.write_frame(&body, out).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use adapters::DialectName;

    #[test]
    fn mix_parses_and_picks_by_weight() {
        let mix: Mix = "auth:70,purchase:20,balance:5,reversal:5".parse().unwrap();
        let mut counts = std::collections::BTreeMap::new();
        for draw in 0..mix.total() {
            *counts.entry(mix.pick(draw)).or_insert(0) += 1;
        }
        assert_eq!(counts[&Operation::Authorization], 70);
        assert_eq!(counts[&Operation::Purchase], 20);
        assert_eq!(counts[&Operation::Balance], 5);
        assert_eq!(counts[&Operation::Reversal], 5);
        assert!("auth:x".parse::<Mix>().is_err());
        assert!(
            "refund:3"
                .parse::<Mix>()
                .unwrap_err()
                .contains("unknown operation")
        );
        assert!("auth:0".parse::<Mix>().is_err());
    }

    #[test]
    fn demo_pans_follow_the_switch_scheme() {
        assert_eq!(demo_pan(0), b"4000000000000002");
        assert_eq!(demo_pan(4), b"4000000000000044");
    }

    #[test]
    fn zipf_favours_the_first_accounts_and_stays_in_range() {
        let accounts = Accounts::new(1_000, Some(1.2)).unwrap();
        let mut rng = SmallRng::seed_from_u64(1);
        let draws: Vec<u64> = (0..10_000).map(|_| accounts.draw(&mut rng)).collect();
        assert!(
            draws
                .iter()
                .all(|a| (FIRST_ACCOUNT..FIRST_ACCOUNT + 1_000).contains(a))
        );
        let first = draws.iter().filter(|a| **a == FIRST_ACCOUNT).count();
        assert!(
            first > 1_000,
            "the most popular account gets far more than 1/1000: {first}"
        );
    }

    #[test]
    fn reversals_name_an_earlier_approval_from_its_terminal() {
        let dialect = DialectName::Default.dialect();
        let mix: Mix = "auth:1,reversal:1".parse().unwrap();
        let mut generator = Generator::new(
            dialect,
            FrameHeader::Binary2,
            3,
            mix,
            Accounts::new(10, None).unwrap(),
            9,
        );
        let mut out = Vec::new();
        let (_, first) = generator.next(&mut out).unwrap();
        assert_eq!(
            first.operation,
            Operation::Authorization,
            "nothing to reverse yet"
        );
        generator.approved(&first);
        let mut reversal = None;
        for _ in 0..50 {
            out.clear();
            let (_, sent) = generator.next(&mut out).unwrap();
            if sent.operation == Operation::Reversal {
                reversal = Some(out.clone());
                break;
            }
            generator.approved(&sent);
        }
        let frame = reversal.expect("a reversal within 50 draws");
        let message = dialect.decode(&frame[2..]).unwrap();
        let original = first.original.unwrap();
        assert_eq!(message.mti, Mti(*b"0400"));
        assert_eq!(&message.get(90).unwrap()[4..10], &original.stan);
        assert_eq!(message.get(41).unwrap(), original.terminal.as_slice());
    }

    #[test]
    fn identities_stay_unique_across_a_million_requests() {
        let dialect = DialectName::Default.dialect();
        let mut generator = Generator::new(
            dialect,
            FrameHeader::Binary2,
            3,
            "balance:1".parse().unwrap(),
            Accounts::new(10, None).unwrap(),
            1,
        );
        generator.sequence = 999_998;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..4 {
            let mut out = Vec::new();
            let (stan, _) = generator.next(&mut out).unwrap();
            let message = dialect.decode(&out[2..]).unwrap();
            assert!(
                seen.insert((message.get(41).unwrap().to_vec(), stan)),
                "identity repeated"
            );
        }
    }
}
