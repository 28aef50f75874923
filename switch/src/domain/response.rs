//! Response codes of field 39 (DESIGN §2.3).

/// Every code the switch answers with. The discriminant order carries no meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResponseCode {
    Approved,
    DoNotHonor,
    InvalidTransaction,
    InvalidAmount,
    InvalidCardNumber,
    NoSuchIssuer,
    OriginalNotFound,
    FormatError,
    InsufficientFunds,
    ExpiredCard,
    NotPermittedToCard,
    NotPermittedToTerminal,
    SuspectedFraud,
    ExceedsAmountLimit,
    RestrictedCard,
    SecurityViolation,
    ExceedsFrequencyLimit,
    IssuerUnavailable,
    DuplicateTransmission,
    SystemMalfunction,
}

impl ResponseCode {
    pub const fn as_bytes(self) -> &'static [u8; 2] {
        use ResponseCode::*;
        match self {
            Approved => b"00",
            DoNotHonor => b"05",
            InvalidTransaction => b"12",
            InvalidAmount => b"13",
            InvalidCardNumber => b"14",
            NoSuchIssuer => b"15",
            OriginalNotFound => b"25",
            FormatError => b"30",
            InsufficientFunds => b"51",
            ExpiredCard => b"54",
            NotPermittedToCard => b"57",
            NotPermittedToTerminal => b"58",
            SuspectedFraud => b"59",
            ExceedsAmountLimit => b"61",
            RestrictedCard => b"62",
            SecurityViolation => b"63",
            ExceedsFrequencyLimit => b"65",
            IssuerUnavailable => b"91",
            DuplicateTransmission => b"94",
            SystemMalfunction => b"96",
        }
    }

    /// Every code, for parsing stored ones back.
    pub const ALL: [ResponseCode; 20] = {
        use ResponseCode::*;
        [
            Approved,
            DoNotHonor,
            InvalidTransaction,
            InvalidAmount,
            InvalidCardNumber,
            NoSuchIssuer,
            OriginalNotFound,
            FormatError,
            InsufficientFunds,
            ExpiredCard,
            NotPermittedToCard,
            NotPermittedToTerminal,
            SuspectedFraud,
            ExceedsAmountLimit,
            RestrictedCard,
            SecurityViolation,
            ExceedsFrequencyLimit,
            IssuerUnavailable,
            DuplicateTransmission,
            SystemMalfunction,
        ]
    };

    pub fn from_bytes(bytes: [u8; 2]) -> Option<ResponseCode> {
        ResponseCode::ALL
            .into_iter()
            .find(|c| *c.as_bytes() == bytes)
    }

    pub fn as_str(self) -> &'static str {
        // Two ASCII digits.
        std::str::from_utf8(self.as_bytes()).unwrap_or("96")
    }

    pub const fn is_approved(self) -> bool {
        matches!(self, ResponseCode::Approved)
    }

    /// The check that gives this code, as the log line of a decline names it.
    pub const fn check(self) -> &'static str {
        use ResponseCode::*;
        match self {
            Approved => "approved",
            DoNotHonor => "issuer declined",
            InvalidTransaction => {
                "transaction not valid here (processing code, MTI, currency, or reversed)"
            }
            InvalidAmount => "amount (zero, beyond the authorization, or field 4 of a reversal)",
            InvalidCardNumber => "card number (length, Luhn, or no account)",
            NoSuchIssuer => "routing: no route for the BIN",
            OriginalNotFound => "original (field 90) not found",
            FormatError => "format: a field missing or malformed",
            InsufficientFunds => "funds",
            ExpiredCard => "card expiry (field 14)",
            NotPermittedToCard => "not permitted (a risk rule: merchant category, country, hours)",
            NotPermittedToTerminal => "acquirer (unknown, another's, or not the connection's)",
            SuspectedFraud => "suspected fraud (a risk rule or the score)",
            ExceedsAmountLimit => "amount limit (the card's, or a risk rule)",
            RestrictedCard => "card or BIN blocked",
            SecurityViolation => "MAC",
            ExceedsFrequencyLimit => "velocity",
            IssuerUnavailable => "capacity or issuer availability",
            DuplicateTransmission => "duplicate: another request under the same identity",
            SystemMalfunction => "system (log failed, table full)",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Balances {
    pub ledger: i64,
    pub available: i64,
    pub currency: u16,
}

/// The decision for one request, everything the response needs beyond the echoed fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub code: ResponseCode,
    /// Field 38, on approval of a request that moved money or placed a hold.
    pub auth_id: Option<[u8; 6]>,
    /// Field 54, on a balance inquiry and on approvals of 0200.
    pub balances: Option<Balances>,
}

impl Outcome {
    pub const fn decline(code: ResponseCode) -> Outcome {
        Outcome {
            code,
            auth_id: None,
            balances: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_two_distinct_digits() {
        use ResponseCode::*;
        let mut seen = std::collections::HashSet::new();
        for code in ResponseCode::ALL {
            assert!(code.as_bytes().iter().all(u8::is_ascii_digit));
            assert!(seen.insert(code.as_bytes()), "{code:?} repeats a code");
        }
        assert_eq!(ExceedsAmountLimit.as_str(), "61");
    }
}
