//! Money semantics under random traffic (DESIGN §2.2): holds, advices, purchases, withdrawals,
//! refunds, deposits, balance inquiries, completions (several per hold), full and partial
//! reversals of every kind of original, reversals that overtake their original, repeats,
//! retransmissions, conflicting duplicates and the passage of time, run through the real
//! idempotency table and ledger shard.
//!
//! After every step, an independent model written from DESIGN §2.2 (not from the ledger's code)
//! says what the answer must be and what money it must move. The test checks that the switch
//! gave that answer, that **every approval moved exactly what the model says it states and no
//! decline or retransmission moved anything**, and that the shard's total is conserved.
//! `PROPTEST_CASES` raises the case count (CI runs the default below).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::HashMap;

use proptest::prelude::*;
use switch::acquirer::idempotency::{Begin, IdempotencyStore};
use switch::domain::{
    CardToken, Kind, Minor, Outcome, Pan, Posting, ResponseCode, Tokenizer, TxnKey,
};
use switch::ledger::{Account, LedgerShard, ShardLimits};
use switch::wal::format::{self, SnapshotSection};

const ACQUIRER: u64 = 123_456;
const OTHER_ACQUIRER: u64 = 654_321;
/// Field 7 of every request: 2026-11-26 14:30:15.
const TRANSMISSION: u64 = 1_126_143_015;
/// The same moment in Unix seconds; the run starts here and time moves on.
const START: u64 = 1_795_703_415;
const LIMITS: ShardLimits = ShardLimits {
    transactions_max: 100_000,
    hot_max: 100_000,
    hold_expiry_seconds: 400,
    reversal_window_seconds: 200,
};
const BALANCES: [i64; 4] = [50_000, 0, 20_000, 1_000_000];
/// Card 3 has a per-transaction limit; card 2 is blocked.
const LIMIT_CARD: usize = 3;
const BLOCKED_CARD: usize = 2;
const LIMIT: Minor = 30_000;

fn tokens() -> Vec<CardToken> {
    let tokenizer = Tokenizer::new([5; 16]);
    (0..BALANCES.len() as u64)
        .map(|i| tokenizer.token(&Pan::from_scheme("400000", i, 9).unwrap()))
        .collect()
}

fn key(stan: u32) -> TxnKey {
    TxnKey {
        acquirer: ACQUIRER,
        terminal: *b"TERM0001",
        stan,
        transmission: TRANSMISSION,
    }
}

/// One step of the random workload.
#[derive(Clone, Debug)]
enum Step {
    /// A new request: kind, card, amount, the request it names (for completions and reversals:
    /// the `names`-th request sent before it, or when `names` ≤ 0 one `1 − names` steps ahead,
    /// not sent yet), a field 95 amount, whether field 90 names another acquirer, and whether
    /// a reversal's field 4 repeats the amount of the request it names (as it should).
    Send {
        kind: Kind,
        card: usize,
        amount: Minor,
        names: i64,
        replacement: Option<Minor>,
        foreign: bool,
        repeats_amount: bool,
    },
    /// The request of an earlier step again, unchanged (a retransmission or a repeat 0401/0421).
    Retransmit(usize),
    /// An earlier step's identity with another amount: a conflicting duplicate.
    Conflict(usize),
    /// Time passes; expiry runs.
    Wait(u64),
}

fn any_kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        3 => Just(Kind::Authorization),
        1 => Just(Kind::AuthorizationAdvice),
        2 => Just(Kind::Purchase),
        1 => Just(Kind::CashWithdrawal),
        1 => Just(Kind::Refund),
        1 => Just(Kind::Deposit),
        1 => Just(Kind::BalanceInquiry),
        4 => Just(Kind::Completion),
        3 => Just(Kind::Reversal),
        2 => Just(Kind::ReversalAdvice),
    ]
}

/// Amounts that often meet each other (a completion of exactly what remains), and any others.
fn any_amount() -> impl Strategy<Value = Minor> {
    prop_oneof![
        1 => Just(0u64),
        6 => prop::sample::select(vec![100u64, 500, 1_000, 2_500, 5_000, 10_000]),
        3 => 1u64..40_000,
    ]
}

fn any_step() -> impl Strategy<Value = Step> {
    let send = (
        any_kind(),
        prop_oneof![4 => Just(0usize), 1 => 0..BALANCES.len()],
        any_amount(),
        prop_oneof![8 => 1i64..6, 1 => -3i64..=0, 1 => 6i64..40],
        prop_oneof![3 => Just(None), 1 => Just(Some(0)), 2 => any_amount().prop_map(Some)],
        prop::bool::weighted(0.05),
        prop::bool::weighted(0.9),
    )
        .prop_map(
            |(kind, card, amount, names, replacement, foreign, repeats_amount)| Step::Send {
                repeats_amount,
                kind,
                card,
                amount,
                names,
                replacement,
                foreign,
            },
        );
    prop_oneof![
        12 => send,
        2 => (0usize..60).prop_map(Step::Retransmit),
        1 => (0usize..60).prop_map(Step::Conflict),
        1 => prop_oneof![Just(1u64), Just(150), Just(250), Just(500)].prop_map(Step::Wait),
    ]
}

/// A transaction as the model keeps it.
#[derive(Clone, Copy, Debug)]
struct Kept {
    card: usize,
    kind: Kind,
    amount: Minor,
    /// What it amounts to after reversals.
    now: Minor,
    /// A hold: still held; what its completions captured.
    held: Minor,
    captured: Minor,
    /// A completion: its hold.
    hold: Option<TxnKey>,
    /// A reversal came before it.
    reversed_first: bool,
    at: u64,
}

/// The money a step moves on one card: (ledger, held).
type Movement = (i64, i64);

/// DESIGN §2.2 as plain rules, independent of the ledger's code.
struct Model {
    kept: HashMap<TxnKey, Kept>,
    ledger: Vec<i64>,
    held: Vec<i64>,
}

fn signed(amount: Minor) -> i64 {
    i64::try_from(amount).unwrap()
}

impl Model {
    fn new() -> Model {
        Model {
            kept: HashMap::new(),
            ledger: BALANCES.to_vec(),
            held: vec![0; BALANCES.len()],
        }
    }

    fn available(&self, card: usize) -> i64 {
        self.ledger[card] - self.held[card]
    }

    /// The answer to `posting` of `card` at `now`, and the movement an approval states.
    fn decide(&mut self, posting: &Posting, card: usize, now: u64) -> (ResponseCode, Movement) {
        use ResponseCode::*;
        let nothing = (0, 0);
        let kind = posting.kind;
        if matches!(
            kind,
            Kind::Reversal | Kind::ReversalAdvice | Kind::Completion
        ) && posting.original.unwrap().acquirer != posting.key.acquirer
        {
            return (NotPermittedToTerminal, nothing);
        }
        if matches!(kind, Kind::Reversal | Kind::ReversalAdvice) {
            let original = posting.original.unwrap();
            let Some(mut kept) = self.kept.get(&original).copied() else {
                // The original may still come while its field 7 is within the window; a partial
                // reversal says part of it happened, so it cannot come first.
                if now - START >= LIMITS.reversal_window_seconds
                    || posting.replacement.is_some_and(|r| r > 0)
                {
                    return (OriginalNotFound, nothing);
                }
                self.kept.insert(
                    original,
                    Kept {
                        card,
                        kind,
                        amount: posting.amount,
                        now: 0,
                        held: 0,
                        captured: 0,
                        hold: None,
                        reversed_first: true,
                        at: now,
                    },
                );
                return (Approved, nothing);
            };
            if kept.card != card {
                return (OriginalNotFound, nothing);
            }
            if kept.reversed_first {
                return (Approved, nothing);
            }
            // Field 4 must repeat the original's amount; field 95 says what really happened.
            let wanted = posting.replacement.unwrap_or(0);
            if posting.amount != kept.amount || wanted > kept.amount {
                return (InvalidAmount, nothing);
            }
            let target = wanted.min(kept.now);
            let back = signed(kept.now - target);
            let movement = match kept.kind {
                Kind::Authorization | Kind::AuthorizationAdvice => {
                    if target < kept.captured {
                        return (InvalidTransaction, nothing);
                    }
                    let keep = kept.held.min(target - kept.captured);
                    let released = signed(kept.held - keep);
                    kept.held = keep;
                    (0, -released)
                }
                Kind::Purchase | Kind::CashWithdrawal => (back, 0),
                Kind::Refund | Kind::Deposit => (-back, 0),
                Kind::Completion => {
                    if let Some(hold) = kept.hold.and_then(|h| self.kept.get_mut(&h)) {
                        hold.captured -= kept.now - target;
                    }
                    (back, 0)
                }
                _ => unreachable!("only these are kept"),
            };
            kept.now = target;
            self.kept.insert(original, kept);
            return (Approved, movement);
        }
        if kind != Kind::BalanceInquiry
            && let Some(kept) = self.kept.get(&posting.key)
        {
            return if kept.reversed_first && kept.card == card {
                (InvalidTransaction, nothing)
            } else {
                (DuplicateTransmission, nothing)
            };
        }
        if kind == Kind::Completion {
            let original = posting.original.unwrap();
            let Some(hold) = self.kept.get(&original).copied() else {
                return (OriginalNotFound, nothing);
            };
            if hold.card != card {
                return (OriginalNotFound, nothing);
            }
            if !matches!(hold.kind, Kind::Authorization | Kind::AuthorizationAdvice)
                || hold.reversed_first
                || hold.now == 0
            {
                return (InvalidTransaction, nothing);
            }
            if posting.amount == 0 || posting.amount > hold.now - hold.captured {
                return (InvalidAmount, nothing);
            }
            let movement = (-signed(posting.amount), -signed(hold.held));
            let hold_entry = self.kept.get_mut(&original).unwrap();
            hold_entry.held = 0;
            hold_entry.captured += posting.amount;
            self.keep(posting, card, now, Some(original));
            return (Approved, movement);
        }
        if card == BLOCKED_CARD {
            return (RestrictedCard, nothing);
        }
        if kind == Kind::BalanceInquiry {
            return (Approved, nothing);
        }
        if matches!(
            kind,
            Kind::Authorization | Kind::Purchase | Kind::CashWithdrawal
        ) {
            if card == LIMIT_CARD && posting.amount > LIMIT {
                return (ExceedsAmountLimit, nothing);
            }
            if self.available(card) < signed(posting.amount) {
                return (InsufficientFunds, nothing);
            }
        }
        if kind == Kind::Authorization && posting.amount == 0 {
            return (Approved, nothing);
        }
        let amount = signed(posting.amount);
        let movement = match kind {
            Kind::Authorization | Kind::AuthorizationAdvice => (0, amount),
            Kind::Purchase | Kind::CashWithdrawal => (-amount, 0),
            Kind::Refund | Kind::Deposit => (amount, 0),
            _ => unreachable!("handled above"),
        };
        self.keep(posting, card, now, None);
        (Approved, movement)
    }

    fn keep(&mut self, posting: &Posting, card: usize, now: u64, hold: Option<TxnKey>) {
        let is_hold = matches!(
            posting.kind,
            Kind::Authorization | Kind::AuthorizationAdvice
        );
        self.kept.insert(
            posting.key,
            Kept {
                card,
                kind: posting.kind,
                amount: posting.amount,
                now: posting.amount,
                held: if is_hold { posting.amount } else { 0 },
                captured: 0,
                hold,
                reversed_first: false,
                at: now,
            },
        );
    }

    fn apply(&mut self, card: usize, (ledger, held): Movement) {
        self.ledger[card] += ledger;
        self.held[card] += held;
    }

    /// Holds past their expiry release what they hold; everything else is forgotten after the
    /// reversal window.
    fn expire(&mut self, now: u64) {
        let expired: Vec<TxnKey> = self
            .kept
            .iter()
            .filter(|(_, k)| {
                let is_hold = matches!(k.kind, Kind::Authorization | Kind::AuthorizationAdvice)
                    && !k.reversed_first;
                let life = if is_hold {
                    LIMITS.hold_expiry_seconds
                } else {
                    LIMITS.reversal_window_seconds
                };
                now - k.at >= life
            })
            .map(|(key, _)| *key)
            .collect();
        for key in expired {
            let kept = self.kept.remove(&key).unwrap();
            self.held[kept.card] -= signed(kept.held);
        }
    }
}

/// The switch under test: the real idempotency table in front of the real shard.
struct Switch {
    idempotency: IdempotencyStore,
    shard: LedgerShard,
    cards: Vec<CardToken>,
}

impl Switch {
    fn new() -> Switch {
        let cards = tokens();
        let mut shard = LedgerShard::new(0, LIMITS);
        for (i, card) in cards.iter().enumerate() {
            let mut account = Account::new(BALANCES[i], 840);
            account.blocked = i == BLOCKED_CARD;
            if i == LIMIT_CARD {
                account.limit_per_transaction = Some(LIMIT);
            }
            shard.open_account(*card, account);
        }
        Switch {
            idempotency: IdempotencyStore::new(1_000_000, 1_000_000),
            shard,
            cards,
        }
    }

    fn balances(&self) -> Vec<(i64, i64)> {
        self.cards
            .iter()
            .map(|c| {
                let a = self.shard.account(c).unwrap();
                (a.ledger, a.held)
            })
            .collect()
    }
}

/// A fingerprint of everything the test puts in a request (what a retransmission repeats).
fn fingerprint(posting: &Posting) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    format!("{posting:?}").hash(&mut hasher);
    hasher.finish()
}

/// What was sent at each step, for retransmissions: the posting, its card and its answer.
type Sent = Vec<(Posting, usize, Outcome)>;

fn run(steps: &[Step]) -> Result<(), TestCaseError> {
    let mut model = Model::new();
    let mut switch = Switch::new();
    let total = switch.shard.total();
    let mut sent: Sent = Vec::new();
    let mut events: Vec<Event> = Vec::new();
    let mut now = START;
    for (i, step) in steps.iter().enumerate() {
        let before = switch.balances();
        let stan = 1_000 + u32::try_from(i).unwrap();
        let (posting, card, fresh) = match step {
            Step::Wait(seconds) => {
                now += seconds;
                switch.shard.expire(now);
                model.expire(now);
                events.push(Event::Expire(now));
                // Through a snapshot and back, as a restart would.
                let section = SnapshotSection {
                    marker_lsn: 0,
                    image: switch.shard.image(),
                };
                let bytes = format::encode_snapshot(&[section], now);
                let image = format::decode_snapshot(&bytes).unwrap().remove(0).image;
                switch.shard = LedgerShard::from_image(0, LIMITS, image);
                let after = switch.balances();
                for (card, (ledger, held)) in after.iter().enumerate() {
                    prop_assert_eq!(
                        *ledger,
                        model.ledger[card],
                        "step {}: ledger after expiry",
                        i
                    );
                    prop_assert_eq!(*held, model.held[card], "step {}: held after expiry", i);
                }
                continue;
            }
            Step::Send {
                kind,
                card,
                amount,
                names,
                replacement,
                foreign,
                repeats_amount,
            } => {
                let refers = matches!(
                    kind,
                    Kind::Completion | Kind::Reversal | Kind::ReversalAdvice
                );
                let named = match usize::try_from(*names) {
                    Ok(back) if back >= 1 => sent
                        .len()
                        .checked_sub(back)
                        .map_or(key(stan + 1), |at| sent[at].0.key),
                    _ => key(stan + 1 + u32::try_from(-names).unwrap()),
                };
                let original = refers.then_some(TxnKey {
                    acquirer: if *foreign { OTHER_ACQUIRER } else { ACQUIRER },
                    ..named
                });
                let is_reversal = matches!(kind, Kind::Reversal | Kind::ReversalAdvice);
                let amount = match sent.iter().find(|(p, ..)| p.key == named) {
                    Some((original, ..)) if is_reversal && *repeats_amount => original.amount,
                    _ => *amount,
                };
                let posting = Posting {
                    kind: *kind,
                    card: switch.cards[*card],
                    amount,
                    currency: Some(840),
                    key: key(stan),
                    original,
                    replacement: if matches!(kind, Kind::Reversal | Kind::ReversalAdvice) {
                        *replacement
                    } else {
                        None
                    },
                };
                (posting, *card, true)
            }
            Step::Retransmit(j) | Step::Conflict(j) => {
                let Some((posting, card, _)) = sent.get(*j).copied() else {
                    continue;
                };
                let mut posting = posting;
                if matches!(step, Step::Conflict(_)) {
                    posting.amount += 1;
                }
                (posting, card, false)
            }
        };
        let print = fingerprint(&posting);
        let outcome = match switch.idempotency.begin(posting.key, print) {
            Begin::New => {
                prop_assert!(fresh, "step {}: a repeated identity counted as new", i);
                // Every third request is retransmitted while it is being decided.
                let waiting = (i % 3 == 0).then(|| switch.idempotency.begin(posting.key, print));
                let outcome = switch.shard.apply(&posting, now);
                events.push(Event::Apply(posting, now));
                switch.idempotency.finish(&posting.key, outcome);
                if let Some(waiting) = waiting {
                    let Begin::InFlight(mut decided) = waiting else {
                        return Err(TestCaseError::fail(format!("step {i}: {waiting:?}")));
                    };
                    prop_assert_eq!(
                        decided.try_recv(),
                        Ok(outcome),
                        "step {}: the waiter's answer",
                        i
                    );
                }
                let (code, movement) = model.decide(&posting, card, now);
                prop_assert_eq!(outcome.code, code, "step {}: {:?}", i, posting);
                model.apply(card, movement);
                // Exactly the stated movement on the request's card, nothing on the others.
                let after = switch.balances();
                for (c, ((ledger_before, held_before), (ledger, held))) in
                    before.iter().zip(&after).enumerate()
                {
                    let expected = if c == card { movement } else { (0, 0) };
                    prop_assert_eq!(
                        (ledger - ledger_before, held - held_before),
                        expected,
                        "step {}: card {} moved other than stated by {:?}",
                        i,
                        c,
                        posting
                    );
                }
                if outcome.code.is_approved() {
                    let balances = outcome.balances.unwrap();
                    let (ledger, held) = after[card];
                    prop_assert_eq!(
                        (balances.ledger, balances.available),
                        (ledger, ledger - held)
                    );
                }
                outcome
            }
            Begin::Replay(outcome) => {
                prop_assert!(!fresh || sent.iter().any(|(p, ..)| p.key == posting.key));
                let original = sent.iter().find(|(p, ..)| p.key == posting.key).unwrap();
                prop_assert_eq!(
                    outcome,
                    original.2,
                    "step {}: a retransmission got another answer",
                    i
                );
                prop_assert_eq!(
                    &switch.balances(),
                    &before,
                    "step {}: a retransmission moved money",
                    i
                );
                outcome
            }
            Begin::Conflict => {
                prop_assert!(
                    matches!(step, Step::Conflict(_)),
                    "step {}: unexpected conflict",
                    i
                );
                prop_assert_eq!(&switch.balances(), &before);
                Outcome::decline(ResponseCode::DuplicateTransmission)
            }
            other => return Err(TestCaseError::fail(format!("step {i}: {other:?}"))),
        };
        if fresh {
            sent.push((posting, card, outcome));
        }
        prop_assert_eq!(switch.shard.total(), total, "step {}: conservation", i);
        for (c, (ledger, held)) in switch.balances().into_iter().enumerate() {
            prop_assert_eq!(
                (ledger, held),
                (model.ledger[c], model.held[c]),
                "step {}: card {}",
                i,
                c
            );
            prop_assert!(held >= 0);
        }
    }
    // Replay: the same decisions at the same times give the same state, as recovery relies on.
    let mut replayed = Switch::new().shard;
    for event in &events {
        match event {
            Event::Apply(posting, at) => {
                replayed.apply(posting, *at);
            }
            Event::Expire(at) => {
                replayed.expire(*at);
            }
        }
    }
    prop_assert!(
        replayed.image().same_state(&switch.shard.image()),
        "replay differs"
    );
    Ok(())
}

/// What the ledger was asked to do, in order, for the replay check.
enum Event {
    Apply(Posting, u64),
    Expire(u64),
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_approval_moves_exactly_what_it_states(steps in prop::collection::vec(any_step(), 1..300)) {
        run(&steps)?;
    }
}

/// The table, as a fixed sequence through the same checks.
#[test]
fn the_cases_that_used_to_approve_without_moving_money() {
    let send = |kind, card, amount, names, replacement| Step::Send {
        kind,
        card,
        amount,
        names,
        replacement,
        foreign: false,
        repeats_amount: true,
    };
    let steps = [
        // Hold 100.00, capture 30.00, then 50.00 more under a new STAN.
        send(Kind::Authorization, 0, 10_000, 0, None),
        send(Kind::Completion, 0, 3_000, 1, None),
        send(Kind::Completion, 0, 5_000, 2, None),
        send(Kind::Completion, 0, 2_001, 3, None),
        // Withdrawal of 100.00 of which 70.00 was dispensed.
        send(Kind::CashWithdrawal, 0, 10_000, 0, None),
        send(Kind::ReversalAdvice, 0, 10_000, 1, Some(7_000)),
        // A reversal before its purchase (step 6 names step 7, sent next).
        send(Kind::ReversalAdvice, 3, 500, 0, None),
        send(Kind::Purchase, 3, 500, 0, None),
        // The capture of step 1 undone.
        send(Kind::ReversalAdvice, 0, 3_000, 7, None),
        // ... and what it captured is authorized again.
        send(Kind::Completion, 0, 5_000, 9, None),
        Step::Retransmit(8),
        Step::Retransmit(5),
        Step::Conflict(2),
    ];
    run(&steps).unwrap();
    let mut switch = Switch::new();
    // The same steps, read back as balances: 500.00 − 30.00 − 50.00 − 100.00 + 30.00 (the
    // 30.00 not dispensed) + 30.00 (the capture undone) − 50.00 (captured again) = 330.00.
    let mut model = Model::new();
    // Every step is a fresh request here, so "n back" is the step n before.
    for (i, step) in steps.iter().enumerate().take(10) {
        let Step::Send {
            kind,
            card,
            amount,
            names,
            replacement,
            ..
        } = step
        else {
            continue;
        };
        let stan = 1_000 + i64::try_from(i).unwrap();
        let named = if *names >= 1 {
            stan - names
        } else {
            stan + 1 - names
        };
        let posting = Posting {
            kind: *kind,
            card: switch.cards[*card],
            amount: *amount,
            currency: Some(840),
            key: key(u32::try_from(stan).unwrap()),
            original: matches!(
                kind,
                Kind::Completion | Kind::Reversal | Kind::ReversalAdvice
            )
            .then(|| key(u32::try_from(named).unwrap())),
            replacement: *replacement,
        };
        let outcome = switch.shard.apply(&posting, START);
        let (code, movement) = model.decide(&posting, *card, START);
        assert_eq!(outcome.code, code, "step {i}");
        model.apply(*card, movement);
    }
    let account = switch.shard.account(&switch.cards[0]).unwrap();
    assert_eq!((account.ledger, account.available()), (33_000, 33_000));
    let late = switch.shard.account(&switch.cards[3]).unwrap();
    assert_eq!(
        late.ledger, 1_000_000,
        "the overtaken purchase moved nothing"
    );
}
