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
    /// Field 14, when present, with a full year.
    pub expiry: Option<YearMonth>,
    /// The month of field 7 with the year it falls in.
    pub transmission_month: YearMonth,
    /// Field 18, when present.
    pub merchant_category: Option<u16>,
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
        }
    }
}
