//! Risk rules evaluated before routing: cheap, stateless checks that decline early. The
//! [`actor`] owns them on each worker.
//! Velocity and scoring (state sharded by card) belong to the full risk engine, a later issue.

use crate::domain::{Kind, Minor, Request, ResponseCode};

pub mod actor;

/// The rules of `[risk]` in the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RiskRules {
    /// Largest single amount, in minor units of `amount_max_currency`.
    pub amount_max: Minor,
    pub amount_max_currency: u16,
    pub blocked_bins: Vec<Vec<u8>>,
    pub blocked_merchant_categories: Vec<u16>,
}

#[derive(Clone, Debug)]
pub struct RiskEngine {
    rules: RiskRules,
}

impl RiskEngine {
    pub fn new(rules: RiskRules) -> RiskEngine {
        RiskEngine { rules }
    }

    /// `Err(code)` declines the request before it reaches routing.
    pub fn evaluate(&self, request: &Request) -> Result<(), ResponseCode> {
        if request.kind.refers_to_original() {
            // Completions and reversals settle what was already approved: never declined here.
            return Ok(());
        }
        if request
            .expiry
            .is_some_and(|expiry| expiry < request.transmission_month)
        {
            return Err(ResponseCode::ExpiredCard);
        }
        if request.kind.needs_amount() && request.amount == 0 {
            return Err(ResponseCode::InvalidAmount);
        }
        if request.kind != Kind::BalanceInquiry
            && request.currency.unwrap_or(self.rules.amount_max_currency)
                == self.rules.amount_max_currency
            && request.amount > self.rules.amount_max
        {
            return Err(ResponseCode::ExceedsAmountLimit);
        }
        if self
            .rules
            .blocked_bins
            .iter()
            .any(|bin| request.pan.starts_with(bin))
        {
            return Err(ResponseCode::RestrictedCard);
        }
        if request
            .merchant_category
            .is_some_and(|mcc| self.rules.blocked_merchant_categories.contains(&mcc))
        {
            return Err(ResponseCode::NotPermittedToCard);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Pan;
    use crate::domain::request::{TxnKey, YearMonth};

    fn request(kind: Kind, amount: u64) -> Request {
        Request {
            kind,
            pan: Pan::parse(b"4000000000000002").unwrap(),
            card: crate::domain::Tokenizer::new([0; 16])
                .token(&Pan::parse(b"4000000000000002").unwrap()),
            amount,
            currency: Some(840),
            account_type: *b"00",
            key: TxnKey {
                acquirer: 1,
                terminal: *b"TERM0001",
                stan: 1,
                transmission: 1_126_000_000,
            },
            original: None,
            replacement: None,
            expiry: Some(YearMonth {
                year: 2028,
                month: 12,
            }),
            transmission_month: YearMonth {
                year: 2026,
                month: 11,
            },
            merchant_category: Some(5999),
        }
    }

    #[test]
    fn rules_in_order() {
        let engine = RiskEngine::new(RiskRules {
            amount_max: 100_000,
            amount_max_currency: 840,
            blocked_bins: vec![b"4000000000000002".to_vec()[..7].to_vec()],
            blocked_merchant_categories: vec![7995],
        });
        let open = RiskEngine::new(RiskRules {
            blocked_bins: vec![],
            ..engine.rules.clone()
        });
        let expired = Request {
            expiry: Some(YearMonth {
                year: 2026,
                month: 10,
            }),
            ..request(Kind::Purchase, 1)
        };
        let this_month = Request {
            expiry: Some(YearMonth {
                year: 2026,
                month: 11,
            }),
            ..request(Kind::Purchase, 1)
        };
        let casino = Request {
            merchant_category: Some(7995),
            ..request(Kind::Purchase, 1)
        };
        let reversal_of_big = Request {
            original: Some(TxnKey {
                acquirer: 1,
                terminal: *b"TERM0001",
                stan: 1,
                transmission: 1,
            }),
            ..request(Kind::Reversal, 200_000)
        };
        let cases = [
            (&open, request(Kind::Purchase, 100), Ok(())),
            (&open, expired, Err(ResponseCode::ExpiredCard)),
            (&open, this_month, Ok(())),
            (
                &open,
                request(Kind::Purchase, 0),
                Err(ResponseCode::InvalidAmount),
            ),
            (&open, request(Kind::Authorization, 0), Ok(())),
            (&open, request(Kind::BalanceInquiry, 0), Ok(())),
            (
                &open,
                request(Kind::Purchase, 100_001),
                Err(ResponseCode::ExceedsAmountLimit),
            ),
            (&open, casino, Err(ResponseCode::NotPermittedToCard)),
            (&open, reversal_of_big, Ok(())),
            (
                &engine,
                request(Kind::Purchase, 100),
                Err(ResponseCode::RestrictedCard),
            ),
            // An advice is an acquirer's word that a stand-in approved: the rules still apply,
            // and a refusal hands it to the acquirer's exception handling.
            (
                &engine,
                request(Kind::AuthorizationAdvice, 100),
                Err(ResponseCode::RestrictedCard),
            ),
        ];
        for (i, (engine, request, expected)) in cases.into_iter().enumerate() {
            assert_eq!(engine.evaluate(&request), expected, "case {i}");
        }
    }
}
