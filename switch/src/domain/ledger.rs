//! One ledger shard's state: the accounts it owns, the transactions that may still be completed
//! or reversed, and its share of each acquirer's settlement account.
//!
//! Every movement of money is double-entry: the card account against the acquirer's settlement
//! position in the same shard, so **the shard's total (card balances plus settlement positions)
//! never changes** through ISO 8583 traffic. Holds move no money: they only lower the available
//! balance until captured, reversed or expired.

use std::collections::{HashMap, VecDeque};

use super::request::{Kind, Posting, TxnKey};
use super::{CardToken, Minor, ResponseCode};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Account {
    /// Posted balance in minor units. Signed: a reversal of a deposit that was already spent
    /// must still be honoured.
    pub ledger: i64,
    /// Sum of open holds.
    pub held: i64,
    /// ISO 4217 numeric code.
    pub currency: u16,
    pub blocked: bool,
    /// Largest amount of one debit (61 above it).
    pub limit_per_transaction: Option<Minor>,
}

impl Account {
    pub fn new(ledger: i64, currency: u16) -> Account {
        Account {
            ledger,
            held: 0,
            currency,
            blocked: false,
            limit_per_transaction: None,
        }
    }

    pub fn available(&self) -> i64 {
        self.ledger - self.held
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Open,
    /// A hold captured for this amount.
    Captured(Minor),
    /// Reversed or expired: nothing more may happen to it.
    Closed,
}

/// A transaction kept for completion or reversal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub card: CardToken,
    pub kind: Kind,
    pub amount: Minor,
    pub state: State,
}

/// A shard's whole state as plain data: what a snapshot stores.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardImage {
    pub accounts: Vec<(CardToken, Account)>,
    pub transactions: Vec<(TxnKey, Record)>,
    pub holds_by_age: Vec<(u64, TxnKey)>,
    pub postings_by_age: Vec<(u64, TxnKey)>,
    pub settlement: Vec<(u64, i64)>,
    pub auth_counter: u32,
}

/// The shard of `shards` that owns `card`'s account.
pub fn shard_of(card: &CardToken, shards: usize) -> usize {
    // The remainder is below `shards`, so it fits a usize.
    usize::try_from(card.shard_hash() % shards as u64).unwrap_or(0)
}

/// Redistributes the state of some shards over `shards` shards (when the configured count
/// changed since the snapshot). Settlement positions only matter summed, so they are summed
/// into the first shard.
pub fn reshard(images: Vec<ShardImage>, shards: usize) -> Vec<ShardImage> {
    let mut out: Vec<ShardImage> = vec![ShardImage::default(); shards];
    let mut owner: HashMap<TxnKey, usize> = HashMap::new();
    let mut holds = Vec::new();
    let mut postings = Vec::new();
    let mut settlement: HashMap<u64, i64> = HashMap::new();
    for image in images {
        for (card, account) in image.accounts {
            out[shard_of(&card, shards)].accounts.push((card, account));
        }
        for (key, record) in image.transactions {
            let shard = shard_of(&record.card, shards);
            owner.insert(key, shard);
            out[shard].transactions.push((key, record));
        }
        holds.extend(image.holds_by_age);
        postings.extend(image.postings_by_age);
        for (acquirer, position) in image.settlement {
            *settlement.entry(acquirer).or_default() += position;
        }
        for shard in &mut out {
            shard.auth_counter = shard.auth_counter.max(image.auth_counter);
        }
    }
    // Stable sorts keep each shard's queue in creation order.
    holds.sort_by_key(|(at, _)| *at);
    postings.sort_by_key(|(at, _)| *at);
    for (at, key) in holds {
        if let Some(&shard) = owner.get(&key) {
            out[shard].holds_by_age.push((at, key));
        }
    }
    for (at, key) in postings {
        if let Some(&shard) = owner.get(&key) {
            out[shard].postings_by_age.push((at, key));
        }
    }
    out[0].settlement = settlement.into_iter().collect();
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardLimits {
    /// Transactions remembered for completion and reversal; over it new ones decline with 96.
    pub transactions_max: usize,
    /// A hold not captured within this many seconds is released.
    pub hold_expiry_seconds: u64,
    /// Posted transactions stay reversible for this many seconds.
    pub reversal_window_seconds: u64,
}

#[derive(Debug)]
pub struct LedgerShard {
    index: u32,
    accounts: HashMap<CardToken, Account>,
    transactions: HashMap<TxnKey, Record>,
    /// Creation order of holds and of other transactions, for expiry without a scan.
    holds_by_age: VecDeque<(u64, TxnKey)>,
    postings_by_age: VecDeque<(u64, TxnKey)>,
    /// Acquirer id → this shard's settlement position with it (what the acquirer is owed).
    settlement: HashMap<u64, i64>,
    auth_counter: u32,
    limits: ShardLimits,
}

impl LedgerShard {
    pub fn new(index: u32, limits: ShardLimits) -> LedgerShard {
        LedgerShard {
            index,
            accounts: HashMap::new(),
            transactions: HashMap::new(),
            holds_by_age: VecDeque::new(),
            postings_by_age: VecDeque::new(),
            settlement: HashMap::new(),
            auth_counter: 0,
            limits,
        }
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    /// The state as plain data, for a snapshot.
    pub fn image(&self) -> ShardImage {
        ShardImage {
            accounts: self.accounts.iter().map(|(c, a)| (*c, *a)).collect(),
            transactions: self.transactions.iter().map(|(k, r)| (*k, *r)).collect(),
            holds_by_age: self.holds_by_age.iter().copied().collect(),
            postings_by_age: self.postings_by_age.iter().copied().collect(),
            settlement: self.settlement.iter().map(|(a, p)| (*a, *p)).collect(),
            auth_counter: self.auth_counter,
        }
    }

    pub fn from_image(index: u32, limits: ShardLimits, image: ShardImage) -> LedgerShard {
        LedgerShard {
            index,
            accounts: image.accounts.into_iter().collect(),
            transactions: image.transactions.into_iter().collect(),
            holds_by_age: image.holds_by_age.into(),
            postings_by_age: image.postings_by_age.into(),
            settlement: image.settlement.into_iter().collect(),
            auth_counter: image.auth_counter,
            limits,
        }
    }

    pub fn reserve_transactions(&mut self, count: usize) {
        self.transactions.reserve(count);
    }

    pub fn reserve_accounts(&mut self, count: usize) {
        self.accounts.reserve(count);
    }

    pub fn open_account(&mut self, card: CardToken, account: Account) {
        self.accounts.insert(card, account);
    }

    pub fn account(&self, card: &CardToken) -> Option<&Account> {
        self.accounts.get(card)
    }

    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }

    pub fn transaction_count(&self) -> usize {
        self.transactions.len()
    }

    /// Card balances plus settlement positions: constant under every operation of
    /// [`LedgerShard::apply`]. Computed, not stored, so a test can trust it.
    pub fn total(&self) -> i128 {
        let cards: i128 = self.accounts.values().map(|a| i128::from(a.ledger)).sum();
        let settlement: i128 = self.settlement.values().map(|&v| i128::from(v)).sum();
        cards + settlement
    }

    pub fn settlement_position(&self, acquirer: u64) -> i64 {
        self.settlement.get(&acquirer).copied().unwrap_or(0)
    }

    /// Applies one request that routing sent to this shard. `now_seconds` orders expiry.
    pub fn apply(&mut self, request: &Posting, now_seconds: u64) -> Outcome {
        let Some(account) = self.accounts.get(&request.card) else {
            return Outcome::decline(ResponseCode::InvalidCardNumber);
        };
        if request.kind.refers_to_original() {
            return self.apply_to_original(request);
        }
        if account.blocked {
            return Outcome::decline(ResponseCode::RestrictedCard);
        }
        if request.currency.is_some_and(|c| c != account.currency) {
            return Outcome::decline(ResponseCode::InvalidTransaction);
        }
        if request.kind == Kind::BalanceInquiry {
            return self.approve_with_balances(request.card, false);
        }
        if request.kind.is_debit() {
            if account
                .limit_per_transaction
                .is_some_and(|limit| request.amount > limit)
            {
                return Outcome::decline(ResponseCode::ExceedsAmountLimit);
            }
            if i128::from(account.available()) < i128::from(request.amount) {
                return Outcome::decline(ResponseCode::InsufficientFunds);
            }
        }
        // An account verification (0100 of zero) holds nothing and is not remembered.
        if request.kind == Kind::Authorization && request.amount == 0 {
            return self.approve_with_balances(request.card, false);
        }
        if self.transactions.contains_key(&request.key) {
            // Same acquirer, STAN and time from another terminal: not a retransmission.
            return Outcome::decline(ResponseCode::DuplicateTransmission);
        }
        if self.transactions.len() >= self.limits.transactions_max {
            return Outcome::decline(ResponseCode::SystemMalfunction);
        }
        // Checked to fit: amounts are at most 12 digits.
        let amount = i64::try_from(request.amount).unwrap_or(i64::MAX);
        let acquirer = request.key.acquirer;
        let is_hold = matches!(
            request.kind,
            Kind::Authorization | Kind::AuthorizationAdvice
        );
        match request.kind {
            Kind::Authorization | Kind::AuthorizationAdvice => self.hold(request.card, amount),
            Kind::Purchase | Kind::CashWithdrawal => self.transfer(request.card, acquirer, -amount),
            Kind::Refund | Kind::Deposit => self.transfer(request.card, acquirer, amount),
            Kind::BalanceInquiry | Kind::Completion | Kind::Reversal | Kind::ReversalAdvice => {
                unreachable!("handled above")
            }
        }
        let record = Record {
            card: request.card,
            kind: request.kind,
            amount: request.amount,
            state: State::Open,
        };
        self.transactions.insert(request.key, record);
        let queue = if is_hold {
            &mut self.holds_by_age
        } else {
            &mut self.postings_by_age
        };
        queue.push_back((now_seconds, request.key));
        // An advice reports a decision taken elsewhere, under that party's authorization code.
        self.approve_with_balances(request.card, request.kind != Kind::AuthorizationAdvice)
    }

    fn apply_to_original(&mut self, request: &Posting) -> Outcome {
        let Some(original) = request.original else {
            return Outcome::decline(ResponseCode::FormatError);
        };
        let Some(record) = self.transactions.get(&original).copied() else {
            return Outcome::decline(ResponseCode::OriginalNotFound);
        };
        if record.card != request.card {
            return Outcome::decline(ResponseCode::OriginalNotFound);
        }
        let acquirer = original.acquirer;
        let amount = i64::try_from(record.amount).unwrap_or(i64::MAX);
        let is_hold = matches!(record.kind, Kind::Authorization | Kind::AuthorizationAdvice);
        let new_state = match (request.kind, record.state) {
            (Kind::Completion, _) if !is_hold => {
                return Outcome::decline(ResponseCode::InvalidTransaction);
            }
            (Kind::Completion, State::Open) => {
                let capture = request.amount;
                if capture == 0 || capture > record.amount {
                    return Outcome::decline(ResponseCode::InvalidAmount);
                }
                self.release(record.card, amount);
                self.transfer(
                    record.card,
                    acquirer,
                    -i64::try_from(capture).unwrap_or(i64::MAX),
                );
                State::Captured(capture)
            }
            // A second completion of the same hold changes nothing (idempotent by original).
            (Kind::Completion, State::Captured(_)) => record.state,
            (Kind::Completion, State::Closed) => {
                return Outcome::decline(ResponseCode::InvalidTransaction);
            }
            (_, State::Closed) => State::Closed,
            (_, State::Open) if is_hold => {
                self.release(record.card, amount);
                State::Closed
            }
            (_, State::Captured(captured)) => {
                self.transfer(
                    record.card,
                    acquirer,
                    i64::try_from(captured).unwrap_or(i64::MAX),
                );
                State::Closed
            }
            (_, State::Open) => {
                // Undo a posting: a debit is credited back, a credit debited back.
                let undo = match record.kind {
                    Kind::Refund | Kind::Deposit => -amount,
                    _ => amount,
                };
                self.transfer(record.card, acquirer, undo);
                State::Closed
            }
        };
        if let Some(stored) = self.transactions.get_mut(&original) {
            stored.state = new_state;
        }
        self.approve_with_balances(record.card, false)
    }

    fn hold(&mut self, card: CardToken, amount: i64) {
        if let Some(account) = self.accounts.get_mut(&card) {
            account.held += amount;
        }
    }

    fn release(&mut self, card: CardToken, amount: i64) {
        if let Some(account) = self.accounts.get_mut(&card) {
            account.held -= amount;
            assert!(account.held >= 0, "held balance of {card} went negative");
        }
    }

    /// Moves `card_delta` into the card account and its opposite into the acquirer's
    /// settlement position: the double entry.
    fn transfer(&mut self, card: CardToken, acquirer: u64, card_delta: i64) {
        if let Some(account) = self.accounts.get_mut(&card) {
            account.ledger += card_delta;
            *self.settlement.entry(acquirer).or_insert(0) -= card_delta;
        }
    }

    fn approve_with_balances(&mut self, card: CardToken, with_auth_id: bool) -> Outcome {
        let balances = self.accounts.get(&card).map(|a| Balances {
            ledger: a.ledger,
            available: a.available(),
            currency: a.currency,
        });
        let auth_id = with_auth_id.then(|| self.next_auth_id());
        Outcome {
            code: ResponseCode::Approved,
            auth_id,
            balances,
        }
    }

    /// Field 38 for an approval: 6 digits, unique per shard for a million approvals.
    pub fn next_auth_id(&mut self) -> [u8; 6] {
        self.auth_counter = self.auth_counter.wrapping_add(1);
        let value = (u64::from(self.auth_counter) * 64 + u64::from(self.index % 64)) % 1_000_000;
        let mut out = [b'0'; 6];
        let mut rest = value;
        for slot in out.iter_mut().rev() {
            *slot = b"0123456789"[(rest % 10) as usize];
            rest /= 10;
        }
        out
    }

    /// Releases holds older than the expiry and forgets transactions past the reversal window.
    /// Returns the holds released, which the WAL records.
    pub fn expire(&mut self, now_seconds: u64) -> Vec<(CardToken, TxnKey)> {
        let mut released = Vec::new();
        while let Some(&(created, key)) = self.holds_by_age.front() {
            if now_seconds.saturating_sub(created) < self.limits.hold_expiry_seconds {
                break;
            }
            self.holds_by_age.pop_front();
            if let Some(record) = self.transactions.remove(&key)
                && record.state == State::Open
            {
                self.release(
                    record.card,
                    i64::try_from(record.amount).unwrap_or(i64::MAX),
                );
                released.push((record.card, key));
            }
        }
        while let Some(&(created, key)) = self.postings_by_age.front() {
            if now_seconds.saturating_sub(created) < self.limits.reversal_window_seconds {
                break;
            }
            self.postings_by_age.pop_front();
            self.transactions.remove(&key);
        }
        released
    }

    /// Replays the release of one hold that [`LedgerShard::expire`] released before a restart.
    /// False if there is no such open hold (which replay reports as a mismatch).
    pub fn release_expired(&mut self, key: &TxnKey) -> bool {
        match self.transactions.get(key).copied() {
            Some(record)
                if record.state == State::Open
                    && matches!(record.kind, Kind::Authorization | Kind::AuthorizationAdvice) =>
            {
                self.transactions.remove(key);
                self.release(
                    record.card,
                    i64::try_from(record.amount).unwrap_or(i64::MAX),
                );
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Pan, Tokenizer};
    use proptest::prelude::*;

    const ACQUIRER: u64 = 123_456;
    const LIMITS: ShardLimits = ShardLimits {
        transactions_max: 1_000,
        hold_expiry_seconds: 100,
        reversal_window_seconds: 50,
    };

    fn token(index: u64) -> CardToken {
        Tokenizer::new([7; 16]).token(&pan(index))
    }

    fn pan(index: u64) -> Pan {
        Pan::from_scheme("400000", index, 9).unwrap()
    }

    fn shard() -> LedgerShard {
        let mut shard = LedgerShard::new(0, LIMITS);
        shard.open_account(token(0), Account::new(10_000, 840));
        shard.open_account(token(1), Account::new(0, 840));
        shard.open_account(
            token(2),
            Account {
                blocked: true,
                ..Account::new(1_000_000, 840)
            },
        );
        shard.open_account(
            token(4),
            Account {
                limit_per_transaction: Some(5_000),
                ..Account::new(1_000_000, 840)
            },
        );
        shard
    }

    fn request(kind: Kind, card: u64, amount: Minor, stan: u32) -> Posting {
        Posting {
            kind,
            card: token(card),
            amount,
            currency: Some(840),
            key: TxnKey {
                acquirer: ACQUIRER,
                terminal: *b"TERM0001",
                stan,
                transmission: 1_126_143_015,
            },
            original: None,
        }
    }

    fn referring(kind: Kind, card: u64, amount: Minor, stan: u32, original_stan: u32) -> Posting {
        let mut r = request(kind, card, amount, stan);
        r.original = Some(TxnKey {
            acquirer: ACQUIRER,
            terminal: *b"TERM0001",
            stan: original_stan,
            transmission: 1_126_143_015,
        });
        r
    }

    /// Applies each step and checks (code, available, ledger) after it, and conservation.
    fn check(steps: &[(Posting, ResponseCode, i64, i64)]) {
        let mut shard = shard();
        let total = shard.total();
        for (i, (request, code, available, ledger)) in steps.iter().enumerate() {
            let outcome = shard.apply(request, 0);
            let account = shard.account(&request.card).unwrap();
            assert_eq!(
                (outcome.code, account.available(), account.ledger),
                (*code, *available, *ledger),
                "step {i}: {request:?}"
            );
            let creates_transaction = !request.kind.refers_to_original()
                && !matches!(
                    request.kind,
                    Kind::BalanceInquiry | Kind::AuthorizationAdvice
                );
            assert_eq!(
                outcome.auth_id.is_some(),
                code.is_approved() && creates_transaction,
                "step {i}: field 38"
            );
            assert_eq!(shard.total(), total, "step {i} broke conservation");
        }
    }

    #[test]
    fn demo_walkthrough_hold_decline_reverse() {
        use Kind::*;
        use ResponseCode::*;
        check(&[
            (request(Authorization, 0, 3_000, 1), Approved, 7_000, 10_000),
            (request(BalanceInquiry, 0, 0, 2), Approved, 7_000, 10_000),
            (
                request(Authorization, 0, 8_000, 3),
                InsufficientFunds,
                7_000,
                10_000,
            ),
            (
                referring(Reversal, 0, 3_000, 4, 1),
                Approved,
                10_000,
                10_000,
            ),
            // Reversing again releases nothing more.
            (
                referring(Reversal, 0, 3_000, 5, 1),
                Approved,
                10_000,
                10_000,
            ),
            (
                referring(ReversalAdvice, 0, 3_000, 6, 99),
                OriginalNotFound,
                10_000,
                10_000,
            ),
        ]);
    }

    #[test]
    fn holds_captures_and_their_reversal() {
        use Kind::*;
        use ResponseCode::*;
        check(&[
            (request(Authorization, 0, 4_000, 1), Approved, 6_000, 10_000),
            (
                referring(Completion, 0, 5_000, 2, 1),
                InvalidAmount,
                6_000,
                10_000,
            ),
            (
                referring(Completion, 0, 3_500, 3, 1),
                Approved,
                6_500,
                6_500,
            ),
            (
                referring(Completion, 0, 3_500, 4, 1),
                Approved,
                6_500,
                6_500,
            ),
            (referring(Reversal, 0, 0, 5, 1), Approved, 10_000, 10_000),
            (
                referring(Completion, 0, 3_500, 6, 1),
                InvalidTransaction,
                10_000,
                10_000,
            ),
        ]);
    }

    #[test]
    fn postings_and_their_reversal() {
        use Kind::*;
        use ResponseCode::*;
        check(&[
            (request(Purchase, 0, 2_500, 1), Approved, 7_500, 7_500),
            (request(CashWithdrawal, 0, 500, 2), Approved, 7_000, 7_000),
            (request(Refund, 0, 1_000, 3), Approved, 8_000, 8_000),
            (request(Deposit, 0, 2_000, 4), Approved, 10_000, 10_000),
            (referring(Reversal, 0, 0, 5, 1), Approved, 12_500, 12_500),
            (referring(Reversal, 0, 0, 6, 4), Approved, 10_500, 10_500),
            (
                referring(Completion, 0, 100, 7, 2),
                InvalidTransaction,
                10_500,
                10_500,
            ),
            (
                request(Purchase, 0, 20_000, 8),
                InsufficientFunds,
                10_500,
                10_500,
            ),
        ]);
    }

    #[test]
    fn card_rules() {
        use Kind::*;
        use ResponseCode::*;
        let mut other_currency = request(Purchase, 4, 100, 3);
        other_currency.currency = Some(978);
        check(&[
            (request(Authorization, 1, 1, 1), InsufficientFunds, 0, 0),
            (
                request(Authorization, 2, 1, 2),
                RestrictedCard,
                1_000_000,
                1_000_000,
            ),
            (
                request(BalanceInquiry, 2, 0, 2),
                RestrictedCard,
                1_000_000,
                1_000_000,
            ),
            (
                request(Authorization, 4, 5_001, 3),
                ExceedsAmountLimit,
                1_000_000,
                1_000_000,
            ),
            (
                request(Authorization, 4, 5_000, 4),
                Approved,
                995_000,
                1_000_000,
            ),
            (other_currency, InvalidTransaction, 995_000, 1_000_000),
            (
                request(Refund, 4, 100_000, 5),
                Approved,
                1_095_000,
                1_100_000,
            ),
        ]);
    }

    #[test]
    fn unknown_account_and_a_key_reused_after_the_idempotency_window() {
        let mut shard = shard();
        assert_eq!(
            shard.apply(&request(Kind::Purchase, 7, 1, 1), 0).code,
            ResponseCode::InvalidCardNumber
        );
        assert_eq!(
            shard.apply(&request(Kind::Purchase, 0, 1, 1), 0).code,
            ResponseCode::Approved
        );
        assert_eq!(
            shard.apply(&request(Kind::Purchase, 0, 1, 1), 0).code,
            ResponseCode::DuplicateTransmission
        );
    }

    #[test]
    fn advice_is_recorded_even_beyond_the_balance() {
        let mut shard = shard();
        let outcome = shard.apply(&request(Kind::AuthorizationAdvice, 1, 700, 1), 0);
        assert_eq!(outcome.code, ResponseCode::Approved);
        assert_eq!(shard.account(&token(1)).unwrap().available(), -700);
    }

    #[test]
    fn holds_expire_and_postings_leave_the_reversal_window() {
        let mut shard = shard();
        shard.apply(&request(Kind::Authorization, 0, 1_000, 1), 10);
        shard.apply(&request(Kind::Purchase, 0, 1_000, 2), 10);
        assert!(shard.expire(59).is_empty());
        assert_eq!(shard.transaction_count(), 2);
        assert!(shard.expire(60).is_empty());
        assert_eq!(
            shard.transaction_count(),
            1,
            "posting forgotten after the window"
        );
        assert_eq!(
            shard.expire(110),
            vec![(token(0), request(Kind::Authorization, 0, 0, 1).key)]
        );
        assert_eq!(shard.account(&token(0)).unwrap().available(), 9_000);
        assert_eq!(
            shard
                .apply(&referring(Kind::Reversal, 0, 0, 3, 1), 111)
                .code,
            ResponseCode::OriginalNotFound
        );
    }

    #[test]
    fn an_expiry_replays_exactly() {
        let mut live = shard();
        let mut replayed = shard();
        let hold = request(Kind::Authorization, 0, 1_000, 1);
        live.apply(&hold, 10);
        replayed.apply(&hold, 10);
        let released = live.expire(500);
        assert_eq!(released.len(), 1);
        assert!(replayed.release_expired(&released[0].1));
        assert!(!replayed.release_expired(&released[0].1), "released once");
        assert_eq!(replayed.account(&token(0)), live.account(&token(0)));
    }

    #[test]
    fn an_image_restores_the_same_state_and_resharding_keeps_every_account_and_the_total() {
        let mut original = shard();
        original.apply(&request(Kind::Authorization, 0, 1_000, 1), 5);
        original.apply(&request(Kind::Purchase, 4, 2_000, 2), 6);
        let image = original.image();
        let mut restored = LedgerShard::from_image(0, LIMITS, image.clone());
        assert_eq!(restored.total(), original.total());
        for step in [
            request(Kind::Purchase, 0, 100, 3),
            referring(Kind::Reversal, 0, 0, 4, 1),
        ] {
            assert_eq!(restored.apply(&step, 7), original.apply(&step, 7));
        }
        assert_eq!(restored.expire(1_000), original.expire(1_000));
        let split = reshard(vec![image.clone()], 3);
        let accounts: usize = split.iter().map(|i| i.accounts.len()).sum();
        assert_eq!(accounts, image.accounts.len());
        let total: i128 = split
            .into_iter()
            .enumerate()
            .map(|(i, img)| LedgerShard::from_image(u32::try_from(i).unwrap(), LIMITS, img).total())
            .sum();
        assert_eq!(total, LedgerShard::from_image(0, LIMITS, image).total());
    }

    #[test]
    fn full_table_declines_new_transactions_with_96() {
        let mut shard = LedgerShard::new(
            0,
            ShardLimits {
                transactions_max: 2,
                ..LIMITS
            },
        );
        shard.open_account(token(0), Account::new(10_000, 840));
        assert!(
            shard
                .apply(&request(Kind::Purchase, 0, 1, 1), 0)
                .code
                .is_approved()
        );
        assert!(
            shard
                .apply(&request(Kind::Purchase, 0, 1, 2), 0)
                .code
                .is_approved()
        );
        assert_eq!(
            shard.apply(&request(Kind::Purchase, 0, 1, 3), 0).code,
            ResponseCode::SystemMalfunction
        );
    }

    #[test]
    fn auth_ids_are_six_digits_and_distinct() {
        let mut shard = shard();
        let a = shard.next_auth_id();
        let b = shard.next_auth_id();
        assert_ne!(a, b);
        assert!(a.iter().all(u8::is_ascii_digit));
    }

    fn any_step() -> impl Strategy<Value = (u8, u64, Minor, u32)> {
        (0u8..10, 0u64..5, 0u64..20_000, 1u32..40)
    }

    proptest! {
        #[test]
        fn random_operation_sequences_conserve_money(steps in proptest::collection::vec(any_step(), 1..200)) {
            let mut shard = shard();
            shard.open_account(token(3), Account::new(50_000, 840));
            let total = shard.total();
            for (i, (op, card, amount, stan)) in steps.into_iter().enumerate() {
                let kinds = [Kind::Authorization, Kind::AuthorizationAdvice, Kind::Purchase, Kind::CashWithdrawal,
                    Kind::Refund, Kind::Deposit, Kind::BalanceInquiry, Kind::Completion, Kind::Reversal, Kind::ReversalAdvice];
                let kind = kinds[usize::from(op)];
                let own_stan = 1_000 + u32::try_from(i).unwrap();
                let request = if kind.refers_to_original() {
                    referring(kind, card, amount, own_stan, stan)
                } else {
                    request(kind, card, amount, stan)
                };
                shard.apply(&request, u64::try_from(i).unwrap());
                shard.expire(u64::try_from(i).unwrap());
                prop_assert_eq!(shard.total(), total);
                for index in 0..5 {
                    let account = shard.account(&token(index)).unwrap();
                    prop_assert!(account.held >= 0);
                }
            }
        }
    }
}
