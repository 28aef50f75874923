//! A financial request as the domain sees it, after the wire fields were checked.

use super::{CardToken, Minor, Pan};

/// What a request asks for (DESIGN §2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// 0100: place a hold.
    Authorization,
    /// 0120: a hold decided elsewhere (stand-in); recorded whatever the balance.
    AuthorizationAdvice,
    /// 0200, processing code 00.
    Purchase,
    /// 0200, processing code 01.
    CashWithdrawal,
    /// 0200, processing code 20.
    Refund,
    /// 0200, processing code 21.
    Deposit,
    /// 0200, processing code 31.
    BalanceInquiry,
    /// 0220: capture a hold named in field 90.
    Completion,
    /// 0400 / 0401: undo the transaction named in field 90.
    Reversal,
    /// 0420 / 0421: the same, as an advice.
    ReversalAdvice,
}

impl Kind {
    /// Kinds whose amount must be above zero (13 otherwise).
    pub fn needs_amount(self) -> bool {
        matches!(
            self,
            Kind::Purchase
                | Kind::CashWithdrawal
                | Kind::Refund
                | Kind::Deposit
                | Kind::AuthorizationAdvice
        )
    }

    /// Kinds that take money from the card and so are subject to limits and funds checks.
    pub fn is_debit(self) -> bool {
        matches!(
            self,
            Kind::Authorization | Kind::Purchase | Kind::CashWithdrawal
        )
    }

    /// Kinds that place a hold (lower the available balance until captured or released).
    pub fn is_hold(self) -> bool {
        matches!(self, Kind::Authorization | Kind::AuthorizationAdvice)
    }

    /// 0400/0401 and 0420/0421.
    pub fn is_reversal(self) -> bool {
        matches!(self, Kind::Reversal | Kind::ReversalAdvice)
    }

    /// Kinds that refer to an original transaction through field 90.
    pub fn refers_to_original(self) -> bool {
        matches!(
            self,
            Kind::Completion | Kind::Reversal | Kind::ReversalAdvice
        )
    }
}

/// Names one request: acquirer (32), terminal (41), STAN (11) and transmission date-time (7).
///
/// It is both the idempotency identity of DESIGN §2.4 and the key by which a completion or
/// reversal finds its original: field 90 repeats the original's acquirer, STAN and field 7, and
/// the completion or reversal comes from the original's terminal, so its own field 41 completes
/// the key. The terminal is part of the key because POS terminals number their own STANs: two
/// terminals may well send the same STAN in the same second.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TxnKey {
    pub acquirer: u64,
    /// Field 41, space-padded to 8 bytes (all spaces when absent).
    pub terminal: [u8; 8],
    pub stan: u32,
    pub transmission: u64,
}

/// Field 90 of a completion or reversal, with the terminal of the message that carries it.
pub type OriginalKey = TxnKey;

/// The idempotency identity of a request (DESIGN §2.4).
pub type RequestIdentity = TxnKey;

/// Card expiry (field 14) or a transmission month, as (year within century, month).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct YearMonth {
    pub year: u16,
    pub month: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub kind: Kind,
    /// For risk and routing; the ledger sees only `card`.
    pub pan: Pan,
    pub card: CardToken,
    pub amount: Minor,
    /// Field 49, when present.
    pub currency: Option<u16>,
    /// Account type from the processing code (digits 3-4), echoed in field 54.
    pub account_type: [u8; 2],
    pub key: TxnKey,
    pub original: Option<OriginalKey>,
    /// A reversal's field 95: the amount that really happened (a partial reversal).
    pub replacement: Option<Minor>,
    /// Field 14, when present, with a full year.
    pub expiry: Option<YearMonth>,
    /// The month of field 7 with the year it falls in.
    pub transmission_month: YearMonth,
    /// Field 18, when present.
    pub merchant_category: Option<u16>,
    /// Field 19 (acquiring institution country code), when present.
    pub country: Option<u16>,
    /// Field 22 (POS entry mode), when present: "01x" is manual key entry.
    pub entry_mode: Option<[u8; 3]>,
    /// Field 42 (card acceptor id), space-padded to 15, when present.
    pub merchant: Option<[u8; 15]>,
}

/// What the ledger reads of a request: the card as a token, never the PAN. This is also what
/// the WAL records, so that replay can apply it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Posting {
    pub kind: Kind,
    pub card: CardToken,
    pub amount: Minor,
    pub currency: Option<u16>,
    pub key: TxnKey,
    pub original: Option<OriginalKey>,
    /// A reversal's field 95 amount: what the original amounts to after it.
    pub replacement: Option<Minor>,
}

impl Request {
    pub fn posting(&self) -> Posting {
        Posting {
            kind: self.kind,
            card: self.card,
            amount: self.amount,
            currency: self.currency,
            key: self.key,
            original: self.original,
            replacement: self.replacement,
        }
    }
}

/// Days from 1970-01-01 to a civil date (Howard Hinnant's algorithm), for any year from 1970.
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    (era * 146_097 + day_of_era).saturating_sub(719_468)
}

/// Unix seconds of field 7 (MMDDhhmmss, UTC, no year) seen at `now_seconds`: the year is the
/// one that puts it nearest before now, allowing it up to a day ahead (clocks differ). `None`
/// when it is not a date and time, or falls before 1970.
pub fn transmission_unix_seconds(field7: u64, now_seconds: u64) -> Option<u64> {
    let (month, day) = (field7 / 100_000_000, field7 / 1_000_000 % 100);
    let (hour, minute, second) = (field7 / 10_000 % 100, field7 / 100 % 100, field7 % 100);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    const DAY: u64 = 86_400;
    // The civil year of `now_seconds`: counting from a year's first day never overshoots.
    let mut year = 1970 + now_seconds / (DAY * 366);
    while days_from_civil(year + 1, 1, 1) * DAY <= now_seconds {
        year += 1;
    }
    let at = |year: u64| {
        (year >= 1970)
            .then(|| days_from_civil(year, month, day) * DAY + hour * 3600 + minute * 60 + second)
    };
    match at(year) {
        Some(sent) if sent <= now_seconds + DAY => Some(sent),
        _ => at(year.checked_sub(1)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transmission_times_take_the_nearest_year_before_now() {
        // 2026-11-30 04:40:00 UTC.
        let now = 1_796_013_600;
        let cases: [(u64, Option<u64>); 6] = [
            (1_130_044_000, Some(now)),
            (1_130_034_000, Some(now - 3_600)),
            // Tomorrow: a clock a little ahead.
            (1_201_044_000, Some(now + 86_400)),
            // Two days ahead can only be last year's.
            (1_202_044_000, Some(now + 2 * 86_400 - 365 * 86_400)),
            (1_332_044_000, None),
            (1_130_246_000, None),
        ];
        for (field7, expected) in cases {
            assert_eq!(transmission_unix_seconds(field7, now), expected, "{field7}");
        }
        // New Year: a December message read on the 1st of January.
        let january_first = 1_798_761_600; // 2027-01-01 00:00:00
        assert_eq!(
            transmission_unix_seconds(1_231_235_959, january_first),
            Some(january_first - 1)
        );
    }
}
