//! One ledger shard's state: the accounts it owns, the transactions that may still be completed
//! or reversed, and its share of each acquirer's settlement account.
//!
//! Every movement of money is double-entry: the card account against the acquirer's settlement
//! position in the same shard, so **the shard's total (card balances plus settlement positions)
//! never changes** through ISO 8583 traffic. Holds move no money: they only lower the available
//! balance until captured, reversed or expired.
//!
//! **An approval moves exactly the money it states, and no approval moves none** (DESIGN §2.2).
//! The rules for the messages that name an original (field 90), which [`LedgerShard::apply`]
//! follows and the property test in `switch/tests/money_properties.rs` checks against a model:
//! - A completion (0220) captures its amount from what remains authorized (the hold's amount
//!   less what earlier completions captured) and releases whatever is still held; further
//!   completions of the same hold capture from the remainder even if the available balance no
//!   longer covers it; beyond the remainder, 13. Each completion is a transaction of its own,
//!   reversible by its own key.
//! - A reversal sets what the named transaction amounts to: the field 95 amount when present
//!   (a partial reversal), otherwise zero. It moves the difference from what the transaction
//!   amounted to before, never more, so reversing twice returns the money once. A reversal of a
//!   hold reduces the hold; it cannot reach below what completions captured (12: reverse those
//!   completions instead), since their money moved under their own keys.
//! - A reversal whose original is unknown but could still arrive (its field 7 lies within the
//!   reversal window) is approved and remembered; the original, when it arrives, is answered 12
//!   and moves no money.

use std::collections::HashMap;

use super::parted::{DequeView, Items, MapView, Pairs, PartedDeque, PartedMap};

use crate::domain::request::{Kind, Posting, TxnKey, transmission_unix_seconds};
use crate::domain::{Balances, CardToken, Minor, Outcome, ResponseCode};
use crate::limits::{REVERSED_FIRST_SHARE, SPILL_PIECE};

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
pub enum State {
    /// Approved; in effect for `Record::effective`.
    Live,
    /// A reversal arrived before the transaction itself. The transaction, when it arrives, is
    /// answered 12 and moves no money.
    ReversedBeforeArrival,
}

/// A transaction kept for completion or reversal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub card: CardToken,
    pub kind: Kind,
    pub state: State,
    /// Field 4 as approved.
    pub amount: Minor,
    /// What the transaction amounts to now: `amount`, lowered by reversals (to the field 95
    /// amount of a partial reversal, to zero by a full one). For a hold, the amount authorized.
    pub effective: Minor,
    pub part: Part,
}

/// What only some transactions keep. An enum rather than fields for all, because millions of
/// records are kept: 80 bytes each instead of 112.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// An authorization (or its advice).
    Hold {
        /// What still lowers the available balance: the amount until the first completion,
        /// which releases it all.
        held: Minor,
        /// What its completions captured, less what reversals of them returned.
        captured: Minor,
    },
    /// A completion, and the hold it captured from: that hold's key is this completion's but
    /// for the STAN and field 7 (the acquirer and terminal are the same).
    Capture { stan: u32, transmission: u64 },
    /// Any other transaction.
    Other,
}

impl Record {
    pub(crate) fn new(card: CardToken, kind: Kind, amount: Minor) -> Record {
        Record {
            card,
            kind,
            state: State::Live,
            amount,
            effective: amount,
            part: if kind.is_hold() {
                Part::Hold {
                    held: amount,
                    captured: 0,
                }
            } else {
                Part::Other
            },
        }
    }

    /// What a hold still holds; zero for anything else.
    pub fn held(&self) -> Minor {
        match self.part {
            Part::Hold { held, .. } => held,
            Part::Capture { .. } | Part::Other => 0,
        }
    }
}

/// A shard's whole state as plain data: what a snapshot stores.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardImage {
    pub accounts: Vec<(CardToken, Account)>,
    pub transactions: Vec<(TxnKey, Record)>,
    pub holds_by_age: Vec<(u64, TxnKey)>,
    pub postings_by_age: Vec<(u64, TxnKey)>,
    pub settlement: Vec<(u64, i64)>,
    pub auth_counter: u64,
    /// Where the transactions on disk stand: the queues hold their newest entries here and
    /// the older ones on disk ([`ColdTier`]).
    pub cold: ColdState,
}

impl ShardImage {
    /// Empties it, keeping the memory of its vectors for the next image, but no more than
    /// twice what it held (after a mass expiry, say).
    pub fn clear(&mut self) {
        fn empty<T>(items: &mut Vec<T>) {
            let kept = items.len().saturating_mul(2);
            items.clear();
            if items.capacity() > kept {
                items.shrink_to(kept);
            }
        }
        let ShardImage {
            accounts,
            transactions,
            holds_by_age,
            postings_by_age,
            settlement,
            auth_counter,
            cold,
        } = self;
        empty(accounts);
        empty(transactions);
        empty(holds_by_age);
        empty(postings_by_age);
        empty(settlement);
        *auth_counter = 0;
        *cold = ColdState::default();
    }
}

/// Which queue by age an entry is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queue {
    Holds,
    Postings,
}

/// A queue's entries on disk: sequence numbers `front..back`, oldest first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub front: u64,
    pub back: u64,
}

impl Span {
    pub fn len(&self) -> u64 {
        self.back.saturating_sub(self.front)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A shard's state at one point between its records, sharing the tables' parts with the
/// shard ([`LedgerShard::view`]): taken on the shard's thread in microseconds, copied into a
/// [`ShardImage`] on the snapshotter's.
#[derive(Debug)]
pub struct ShardView {
    accounts: MapView<CardToken, Account>,
    transactions: MapView<TxnKey, Record>,
    holds_by_age: DequeView<(u64, TxnKey)>,
    postings_by_age: DequeView<(u64, TxnKey)>,
    settlement: Vec<(u64, i64)>,
    auth_counter: u64,
    cold: ColdState,
}

impl ShardView {
    /// The view into `image`, whatever it held, keeping its vectors' memory.
    pub fn image_into(&self, image: &mut ShardImage) {
        let queues = (&self.holds_by_age, &self.postings_by_age);
        let tables = (&self.accounts, &self.transactions);
        fill_image(
            image,
            tables,
            queues,
            self.settlement.iter().copied(),
            (self.auth_counter, self.cold),
        );
    }

    pub fn transaction_count(&self) -> usize {
        self.transactions.len()
    }

    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }
}

/// Fills `image` with a shard's state (from the shard or a view of it), whatever it held,
/// keeping its vectors' memory.
fn fill_image(
    image: &mut ShardImage,
    (accounts_now, transactions_now): (
        &impl Pairs<CardToken, Account>,
        &impl Pairs<TxnKey, Record>,
    ),
    (holds_now, postings_now): (&impl Items<(u64, TxnKey)>, &impl Items<(u64, TxnKey)>),
    settlement_now: impl Iterator<Item = (u64, i64)>,
    (auth_counter_now, cold_now): (u64, ColdState),
) {
    // Every field named: one added to the image cannot be left out of snapshots.
    let ShardImage {
        accounts,
        transactions,
        holds_by_age,
        postings_by_age,
        settlement,
        auth_counter,
        cold,
    } = image;
    fn refill<T: Copy>(out: &mut Vec<T>, count: usize, items: impl Iterator<Item = T>) {
        out.clear();
        out.reserve(count);
        out.extend(items);
    }
    refill(
        accounts,
        accounts_now.count(),
        accounts_now.pairs().map(|(c, a)| (*c, *a)),
    );
    refill(
        transactions,
        transactions_now.count(),
        transactions_now.pairs().map(|(k, r)| (*k, *r)),
    );
    refill(holds_by_age, holds_now.count(), holds_now.items().copied());
    refill(
        postings_by_age,
        postings_now.count(),
        postings_now.items().copied(),
    );
    settlement.clear();
    settlement.extend(settlement_now);
    *auth_counter = auth_counter_now;
    *cold = cold_now;
}

/// Where a shard's transactions on disk stand. A snapshot stores it with the image, and
/// recovery rolls the store back to `version` before replaying the log after the snapshot:
/// the store is derived state, and the log stays the truth.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ColdState {
    /// Changes made to the store so far, each a set of writes committed at once.
    pub version: u64,
    pub holds: Span,
    pub postings: Span,
    /// Transactions on disk.
    pub count: u64,
    /// Of those, reversals remembered before their original.
    pub tombstones: u64,
}

/// The store that keeps a shard's transactions beyond its hot window, with the older part of
/// its queues by age: plain storage, no rules. Writes are gathered until [`ColdTier::commit`],
/// which makes them one change, undone as one if recovery rolls the store back. A failed read
/// or write is kept in [`ColdTier::failure`] (and reads then find nothing): the shard's state
/// can no longer be trusted, so its owner answers 96 and stops, and recovery rebuilds.
pub trait ColdTier: Send + std::fmt::Debug {
    fn get(&self, key: &TxnKey) -> Option<Record>;
    /// Writes `record` under `key`.
    fn put(&mut self, key: &TxnKey, record: &Record);
    /// Writes `record` under `key`, which the caller knows holds nothing (a spill: keys in
    /// memory are never on disk too), without reading it first.
    fn insert_new(&mut self, key: &TxnKey, record: &Record);
    /// Removes what `key` holds and returns it.
    fn remove(&mut self, key: &TxnKey) -> Option<Record>;
    fn push_age(&mut self, queue: Queue, seq: u64, entry: (u64, TxnKey));
    fn age(&self, queue: Queue, seq: u64) -> Option<(u64, TxnKey)>;
    fn remove_age(&mut self, queue: Queue, seq: u64);
    /// Makes the writes since the last commit change `version`.
    fn commit(&mut self, version: u64);
    /// Returns once every change committed so far is written (or the tier has failed).
    fn flush(&self) {}
    fn failure(&self) -> Option<String>;
    /// Every transaction in the store, for tests and for resharding a small store.
    fn all(&self) -> Vec<(TxnKey, Record)>;

    /// Whether looking up the transaction `key` would read the store: not known in memory
    /// (written, or fetched) and not ruled out by a filter. Such a lookup can be done ahead,
    /// off the shard's thread, with [`ColdTier::reader`]. `expected`: the key is expected to
    /// be there (an original); else (a duplicate check) only a filter's "maybe" counts, and
    /// without a filter the lookup is left to the shard's thread, where a miss is cheap. A
    /// tier in memory never reads.
    fn would_read(&self, _key: &TxnKey, _expected: bool) -> bool {
        false
    }
    /// Reads a transaction from the store, on any thread: the store's value only, without
    /// the writes the tier has not yet made. `None`: the tier never reads.
    fn reader(&self) -> Option<ColdReader> {
        None
    }
    /// A read of `key` ahead has started: a write of `key` before its value arrives makes that
    /// value stale, and [`ColdTier::fetched`] then drops it.
    fn fetch_started(&mut self, _key: &TxnKey) {}
    /// The value a read ahead found: lookups of `key` find it in memory until
    /// [`ColdTier::forget_fetched`] (or a write of `key`).
    fn fetched(&mut self, _key: &TxnKey, _value: Result<Option<Vec<u8>>, String>) {}
    /// Lets go of what a read ahead of `key` found.
    fn forget_fetched(&mut self, _key: &TxnKey) {}
    /// Lets go of everything reads ahead found (nothing waits for them any more).
    fn forget_all_fetched(&mut self) {}
}

/// Reads a stored transaction's bytes from a tier's store, on a thread of its own: see
/// [`ColdTier::reader`].
pub type ColdReader =
    std::sync::Arc<dyn Fn(&TxnKey) -> Result<Option<Vec<u8>>, String> + Send + Sync>;

/// A [`ColdTier`] in memory: what the store on disk does, without the disk, for tests and
/// benchmarks of the hot window's rules.
#[derive(Debug, Default)]
pub struct MemoryTier {
    transactions: HashMap<TxnKey, Record>,
    ages: HashMap<(bool, u64), (u64, TxnKey)>,
}

impl ColdTier for MemoryTier {
    fn get(&self, key: &TxnKey) -> Option<Record> {
        self.transactions.get(key).copied()
    }
    fn put(&mut self, key: &TxnKey, record: &Record) {
        self.transactions.insert(*key, *record);
    }
    fn insert_new(&mut self, key: &TxnKey, record: &Record) {
        let before = self.transactions.insert(*key, *record);
        assert!(before.is_none(), "a spilled key was on disk already");
    }
    fn remove(&mut self, key: &TxnKey) -> Option<Record> {
        self.transactions.remove(key)
    }
    fn push_age(&mut self, queue: Queue, seq: u64, entry: (u64, TxnKey)) {
        self.ages.insert((queue == Queue::Holds, seq), entry);
    }
    fn age(&self, queue: Queue, seq: u64) -> Option<(u64, TxnKey)> {
        self.ages.get(&(queue == Queue::Holds, seq)).copied()
    }
    fn remove_age(&mut self, queue: Queue, seq: u64) {
        self.ages.remove(&(queue == Queue::Holds, seq));
    }
    fn commit(&mut self, _version: u64) {}
    fn failure(&self) -> Option<String> {
        None
    }
    fn all(&self) -> Vec<(TxnKey, Record)> {
        self.transactions.iter().map(|(k, r)| (*k, *r)).collect()
    }
}

/// Everything one expiry step depends on: the WAL records it, and replay repeats it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpiryStep {
    pub at_seconds: u64,
    pub hold_expiry_seconds: u64,
    pub reversal_window_seconds: u64,
    pub holds_max: u32,
    pub postings_max: u32,
}

/// What one call of [`LedgerShard::expire_bounded`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expiry {
    /// Holds past their expiry taken off the queue.
    pub holds: u32,
    /// Of those, the ones that still held money, now available again.
    pub released: u32,
    /// Transactions past the reversal window forgotten.
    pub forgotten: u32,
    /// More were due than the bounds allowed.
    pub more: bool,
}

impl Expiry {
    pub fn is_empty(&self) -> bool {
        self.holds == 0 && self.forgotten == 0
    }
}

impl ShardImage {
    /// Whether `other` holds the same state: the same accounts, transactions and settlement
    /// positions (tables in no particular order), queues and counter.
    pub fn same_state(&self, other: &ShardImage) -> bool {
        fn tables(
            image: &ShardImage,
        ) -> (
            HashMap<CardToken, Account>,
            HashMap<TxnKey, Record>,
            HashMap<u64, i64>,
        ) {
            (
                image.accounts.iter().copied().collect(),
                image.transactions.iter().copied().collect(),
                image.settlement.iter().copied().collect(),
            )
        }
        tables(self) == tables(other)
            && self.holds_by_age == other.holds_by_age
            && self.postings_by_age == other.postings_by_age
            && self.auth_counter == other.auth_counter
            && self.cold == other.cold
    }
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
    // Per new shard, each key's record and the old image it came from.
    let mut kept: Vec<HashMap<TxnKey, (Record, usize)>> = vec![HashMap::new(); shards];
    // (key, old image) → new shard, for the queues' entries.
    let mut placed: HashMap<(TxnKey, usize), usize> = HashMap::new();
    let mut holds = Vec::new();
    let mut postings = Vec::new();
    let mut settlement: HashMap<u64, i64> = HashMap::new();
    for (from, image) in images.into_iter().enumerate() {
        for (card, account) in image.accounts {
            out[shard_of(&card, shards)].accounts.push((card, account));
        }
        for (key, record) in image.transactions {
            let shard = shard_of(&record.card, shards);
            match kept[shard].entry(key) {
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert((record, from));
                    placed.insert((key, from), shard);
                }
                std::collections::hash_map::Entry::Occupied(mut slot) => {
                    // Two old shards kept the same key (a reversal remembered on one card, a
                    // transaction of another card under its original's key) and both land
                    // here, where a table holds one: the transaction, over the remembered
                    // reversal (a late original of that card then meets the key taken: 94,
                    // no money either). Queue entries follow the record that stays.
                    let (held, held_from) = *slot.get();
                    if held.state == State::ReversedBeforeArrival && record.state == State::Live {
                        placed.remove(&(key, held_from));
                        slot.insert((record, from));
                        placed.insert((key, from), shard);
                    }
                }
            }
        }
        holds.extend(
            image
                .holds_by_age
                .into_iter()
                .map(|(at, key)| (at, key, from)),
        );
        postings.extend(
            image
                .postings_by_age
                .into_iter()
                .map(|(at, key)| (at, key, from)),
        );
        for (acquirer, position) in image.settlement {
            *settlement.entry(acquirer).or_default() += position;
        }
        for shard in &mut out {
            shard.auth_counter = shard.auth_counter.max(image.auth_counter);
        }
    }
    // Stable sorts keep each shard's queue in creation order.
    holds.sort_by_key(|(at, ..)| *at);
    postings.sort_by_key(|(at, ..)| *at);
    for (at, key, from) in holds {
        if let Some(&shard) = placed.get(&(key, from)) {
            out[shard].holds_by_age.push((at, key));
        }
    }
    for (at, key, from) in postings {
        if let Some(&shard) = placed.get(&(key, from)) {
            out[shard].postings_by_age.push((at, key));
        }
    }
    for (shard, records) in kept.into_iter().enumerate() {
        out[shard].transactions = records
            .into_iter()
            .map(|(key, (record, _))| (key, record))
            .collect();
    }
    out[0].settlement = settlement.into_iter().collect();
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardLimits {
    /// Transactions remembered for completion and reversal, in memory and on disk; over it new
    /// ones decline with 96.
    pub transactions_max: usize,
    /// Of those, the newest kept in memory (with a store on disk; without one, all are).
    pub hot_max: usize,
    /// A hold not captured within this many seconds is released.
    pub hold_expiry_seconds: u64,
    /// Posted transactions stay reversible for this many seconds.
    pub reversal_window_seconds: u64,
}

/// Authorization codes (field 38) are 6 characters of `0-9A-Z`: 36^6 of them.
pub const AUTH_ID_SPACE: u64 = 2_176_782_336;
/// Odd and not a multiple of 3, so coprime with 36^6: counter × this, modulo the space, visits
/// every code once before any repeats, and consecutive approvals get codes far apart.
const AUTH_ID_MULTIPLIER: u64 = 477_653_425;
/// Shifts each shard's sequence, so that two shards rarely hand out the same code together.
const AUTH_ID_SHARD_OFFSET: u64 = 1_000_003;

const _: () = assert!(AUTH_ID_SPACE == 36u64.pow(6));
const _: () =
    assert!(!AUTH_ID_MULTIPLIER.is_multiple_of(2) && !AUTH_ID_MULTIPLIER.is_multiple_of(3));
const _: () = assert!(AUTH_ID_MULTIPLIER < AUTH_ID_SPACE);

/// The authorization code of a shard's `counter`-th approval: unique within the shard for
/// [`AUTH_ID_SPACE`] consecutive approvals (see the README on why that is enough).
pub fn auth_id(counter: u64, shard: u32) -> [u8; 6] {
    const DIGITS: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let sequence = u128::from(counter % AUTH_ID_SPACE) * u128::from(AUTH_ID_MULTIPLIER)
        + u128::from(shard) * u128::from(AUTH_ID_SHARD_OFFSET);
    // The remainder is below 36^6, so it fits a u64.
    let mut rest = u64::try_from(sequence % u128::from(AUTH_ID_SPACE)).unwrap_or(0);
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[usize::try_from(rest % 36).unwrap_or(0)];
        rest /= 36;
    }
    out
}

fn signed(amount: Minor) -> i64 {
    // Amounts come from 12-digit fields, far below i64::MAX.
    i64::try_from(amount).unwrap_or(i64::MAX)
}

// The hasher of a shard's tables: transaction keys are the acquirers' choice (see
// `TableHasher`). SipHash, std's default, cost twice as much per request and replayed record.
use crate::domain::hash::TableHasher;

#[derive(Debug)]
pub struct LedgerShard {
    index: u32,
    /// The large tables are in parts that a snapshot's view shares ([`LedgerShard::view`]).
    accounts: PartedMap<CardToken, Account, TableHasher>,
    transactions: PartedMap<TxnKey, Record, TableHasher>,
    /// Creation order of holds and of other transactions, for expiry without a scan.
    holds_by_age: PartedDeque<(u64, TxnKey)>,
    postings_by_age: PartedDeque<(u64, TxnKey)>,
    /// Acquirer id → this shard's settlement position with it (what the acquirer is owed).
    settlement: HashMap<u64, i64>,
    auth_counter: u64,
    /// Reversals remembered before their original (counted against `REVERSED_FIRST_SHARE`).
    reversed_first: usize,
    limits: ShardLimits,
    /// The transactions beyond the hot window, with the older part of the queues by age.
    cold: Option<Box<dyn ColdTier>>,
    cold_state: ColdState,
    /// Written to the cold tier since its last commit.
    cold_dirty: bool,
}

impl LedgerShard {
    pub fn new(index: u32, limits: ShardLimits) -> LedgerShard {
        LedgerShard {
            index,
            accounts: PartedMap::default(),
            transactions: PartedMap::default(),
            holds_by_age: PartedDeque::default(),
            postings_by_age: PartedDeque::default(),
            settlement: HashMap::new(),
            auth_counter: 0,
            reversed_first: 0,
            limits,
            cold: None,
            cold_state: ColdState::default(),
            cold_dirty: false,
        }
    }

    /// Keeps the transactions beyond the hot window in `tier`, which must hold what this
    /// shard's image says it holds (recovery rolls it back to the image's version).
    pub fn with_cold(mut self, tier: Box<dyn ColdTier>) -> LedgerShard {
        self.cold = Some(tier);
        self
    }

    /// Waits until the cold tier has written every change so far (or failed).
    pub fn cold_flush(&self) {
        if let Some(cold) = &self.cold {
            cold.flush();
        }
    }

    /// Why the cold tier can no longer be trusted, if it cannot.
    pub fn cold_failure(&self) -> Option<String> {
        self.cold.as_ref().and_then(|c| c.failure())
    }

    pub fn cold_state(&self) -> ColdState {
        self.cold_state
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    /// The state as plain data, for a snapshot.
    pub fn image(&self) -> ShardImage {
        let mut image = ShardImage::default();
        self.image_into(&mut image);
        image
    }

    /// The state as it is now, for a snapshot, without copying it: the tables' parts are
    /// shared until written ([`super::parted`]), and [`ShardView::image_into`] copies them on
    /// the thread that writes the snapshot.
    pub fn view(&mut self) -> ShardView {
        ShardView {
            accounts: self.accounts.view(),
            transactions: self.transactions.view(),
            holds_by_age: self.holds_by_age.view(),
            postings_by_age: self.postings_by_age.view(),
            settlement: self.settlement.iter().map(|(a, p)| (*a, *p)).collect(),
            auth_counter: self.auth_counter,
            cold: self.cold_state,
        }
    }

    /// [`LedgerShard::image`] into `image`, whatever it held, keeping its vectors' memory: a
    /// snapshot's image is hundreds of MB at a large hot window, and memory fresh from the
    /// system takes a page fault per 4 KiB at first touch (most of a stall of 0.7 s on the
    /// shard's thread in the soak, bench/RESULTS.md).
    pub fn image_into(&self, image: &mut ShardImage) {
        let queues = (&self.holds_by_age, &self.postings_by_age);
        let tables = (&self.accounts, &self.transactions);
        let settlement = self.settlement.iter().map(|(a, p)| (*a, *p));
        let counters = (self.auth_counter, self.cold_state);
        fill_image(image, tables, queues, settlement, counters);
    }

    /// The whole state as plain data, whether in memory or on disk (with no cold state): what
    /// two shards holding the same transactions split differently have in common. Reads every
    /// transaction on disk: for tests, and for resharding a small store.
    pub fn full_image(&self) -> ShardImage {
        let mut image = self.image();
        let Some(cold) = &self.cold else {
            return image;
        };
        image.transactions.extend(cold.all());
        let queue = |queue: Queue, span: Span, hot: &[(u64, TxnKey)]| {
            let mut all: Vec<(u64, TxnKey)> = (span.front..span.back)
                .filter_map(|seq| cold.age(queue, seq))
                .collect();
            all.extend_from_slice(hot);
            all
        };
        image.holds_by_age = queue(Queue::Holds, self.cold_state.holds, &image.holds_by_age);
        image.postings_by_age = queue(
            Queue::Postings,
            self.cold_state.postings,
            &image.postings_by_age,
        );
        image.cold = ColdState::default();
        image
    }

    pub fn from_image(index: u32, limits: ShardLimits, image: ShardImage) -> LedgerShard {
        let reversed_first = image
            .transactions
            .iter()
            .filter(|(_, r)| r.state == State::ReversedBeforeArrival)
            .count()
            + usize::try_from(image.cold.tombstones).unwrap_or(usize::MAX);
        LedgerShard {
            reversed_first,
            index,
            accounts: image.accounts.into_iter().collect(),
            transactions: image.transactions.into_iter().collect(),
            holds_by_age: image.holds_by_age.into(),
            postings_by_age: image.postings_by_age.into(),
            settlement: image.settlement.into_iter().collect(),
            auth_counter: image.auth_counter,
            limits,
            cold: None,
            cold_state: image.cold,
            cold_dirty: false,
        }
    }

    /// Room for `count` transactions in memory in all, and as many entries in each queue by
    /// age: what they hold counts (a hot window loaded from a snapshot asked `count` more,
    /// and a restart doubled the table, rehashing a million entries into twice the memory).
    pub fn reserve_transactions(&mut self, count: usize) {
        self.transactions.reserve_total(count);
        self.holds_by_age.reserve_total(count);
        self.postings_by_age.reserve_total(count);
    }

    /// Room for `count` accounts in all (what it holds counts, as for transactions).
    pub fn reserve_accounts(&mut self, count: usize) {
        self.accounts.reserve_total(count);
    }

    pub fn open_account(&mut self, card: CardToken, account: Account) {
        self.accounts.insert(card, account);
    }

    pub fn account(&self, card: &CardToken) -> Option<&Account> {
        self.accounts.get(card)
    }

    /// Opens an account (admin API), logged and replayed like a posting. False, changing
    /// nothing, if the card has one already.
    pub fn open(&mut self, card: CardToken, account: Account) -> bool {
        if self.accounts.contains_key(&card) {
            return false;
        }
        self.accounts.insert(card, account);
        true
    }

    /// Blocks or unblocks a card (admin API). False if it has no account here.
    pub fn set_blocked(&mut self, card: &CardToken, blocked: bool) -> bool {
        match self.accounts.get_mut(card) {
            Some(account) => {
                account.blocked = blocked;
                true
            }
            None => false,
        }
    }

    /// A transaction kept for completion or reversal, in memory or on disk.
    pub fn transaction(&self, key: &TxnKey) -> Option<Record> {
        if let Some(record) = self.transactions.get(key) {
            return Some(*record);
        }
        if self.cold_state.count == 0 {
            return None;
        }
        self.cold.as_ref()?.get(key)
    }

    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }

    /// Whether looking up `key` would read the store (see [`ColdTier::would_read`]).
    pub fn would_read(&self, key: &TxnKey, expected: bool) -> bool {
        self.cold_state.count > 0
            && !self.transactions.contains_key(key)
            && self
                .cold
                .as_ref()
                .is_some_and(|cold| cold.would_read(key, expected))
    }

    /// The transactions [`LedgerShard::apply`] looks up for `request`, as far as is known
    /// without reading the store: first its own key for the duplicate check (expected absent),
    /// then the original of a completion or reversal, and the hold behind a reversed
    /// completion once that completion is known (expected there). A lookup missing here is
    /// still made, on the shard's thread.
    pub fn lookups(&self, request: &Posting) -> [Option<TxnKey>; 3] {
        let original = request.original;
        if request.kind.is_reversal() {
            let hold = original
                .filter(|key| !self.would_read(key, true))
                .and_then(|key| Some((key, self.transaction(&key)?)))
                .and_then(|(key, record)| match record.part {
                    Part::Capture { stan, transmission } => Some(TxnKey {
                        stan,
                        transmission,
                        ..key
                    }),
                    _ => None,
                });
            return [None, original, hold];
        }
        if request.kind == Kind::BalanceInquiry {
            return [None; 3];
        }
        let original = original.filter(|_| request.kind == Kind::Completion);
        [Some(request.key), original, None]
    }

    /// See [`ColdTier::reader`].
    pub fn cold_reader(&self) -> Option<ColdReader> {
        self.cold.as_ref()?.reader()
    }

    /// See [`ColdTier::fetch_started`].
    pub fn fetch_started(&mut self, key: &TxnKey) {
        if let Some(cold) = &mut self.cold {
            cold.fetch_started(key);
        }
    }

    /// See [`ColdTier::fetched`].
    pub fn fetched(&mut self, key: &TxnKey, value: Result<Option<Vec<u8>>, String>) {
        if let Some(cold) = &mut self.cold {
            cold.fetched(key, value);
        }
    }

    /// See [`ColdTier::forget_fetched`].
    pub fn forget_fetched(&mut self, key: &TxnKey) {
        if let Some(cold) = &mut self.cold {
            cold.forget_fetched(key);
        }
    }

    /// See [`ColdTier::forget_all_fetched`].
    pub fn forget_all_fetched(&mut self) {
        if let Some(cold) = &mut self.cold {
            cold.forget_all_fetched();
        }
    }

    /// Transactions kept, in memory and on disk.
    pub fn transaction_count(&self) -> usize {
        self.transactions
            .len()
            .saturating_add(usize::try_from(self.cold_state.count).unwrap_or(usize::MAX))
    }

    /// Transactions kept in memory.
    pub fn hot_count(&self) -> usize {
        self.transactions.len()
    }

    /// How long the oldest hold past `ledger.hold_expiry_seconds` has waited at `now_seconds`
    /// to be released (0: none is overdue): expiry falling behind shows here.
    pub fn expiry_lag(&self, now_seconds: u64) -> u64 {
        self.front(Queue::Holds).map_or(0, |(created, _)| {
            now_seconds.saturating_sub(created.saturating_add(self.limits.hold_expiry_seconds))
        })
    }

    /// Writes `record` over the transaction `key` where it is kept (found by
    /// [`LedgerShard::transaction`] just before).
    fn update(&mut self, key: TxnKey, record: Record) {
        if let Some(slot) = self.transactions.get_mut(&key) {
            *slot = record;
        } else if let Some(cold) = &mut self.cold {
            cold.put(&key, &record);
            self.cold_dirty = true;
        }
    }

    /// Removes the transaction `key` wherever it is kept.
    fn take(&mut self, key: &TxnKey) -> Option<Record> {
        if let Some(record) = self.transactions.remove(key) {
            return Some(record);
        }
        if self.cold_state.count == 0 {
            return None;
        }
        let record = self.cold.as_mut()?.remove(key);
        self.cold_dirty = true;
        if let Some(record) = record {
            self.cold_state.count = self.cold_state.count.saturating_sub(1);
            if record.state == State::ReversedBeforeArrival {
                self.cold_state.tombstones = self.cold_state.tombstones.saturating_sub(1);
            }
        }
        record
    }

    /// The oldest entry of `queue`: on disk if any are there, else in memory.
    fn front(&self, queue: Queue) -> Option<(u64, TxnKey)> {
        let span = self.span(queue);
        if !span.is_empty()
            && let Some(cold) = &self.cold
        {
            return cold.age(queue, span.front);
        }
        match queue {
            Queue::Holds => self.holds_by_age.front().copied(),
            Queue::Postings => self.postings_by_age.front().copied(),
        }
    }

    fn pop_front(&mut self, queue: Queue) {
        let span = self.span(queue);
        if !span.is_empty()
            && let Some(cold) = &mut self.cold
        {
            cold.remove_age(queue, span.front);
            self.cold_dirty = true;
            self.span_mut(queue).front += 1;
            return;
        }
        match queue {
            Queue::Holds => self.holds_by_age.pop_front(),
            Queue::Postings => self.postings_by_age.pop_front(),
        };
    }

    fn span(&self, queue: Queue) -> Span {
        match queue {
            Queue::Holds => self.cold_state.holds,
            Queue::Postings => self.cold_state.postings,
        }
    }

    fn span_mut(&mut self, queue: Queue) -> &mut Span {
        match queue {
            Queue::Holds => &mut self.cold_state.holds,
            Queue::Postings => &mut self.cold_state.postings,
        }
    }

    /// Moves the oldest transactions in memory to disk while more than the hot window are in
    /// memory, a bounded piece at a time: with their queue entries, oldest first, so that
    /// whatever is on disk is older than whatever is not.
    fn spill(&mut self) {
        let hot_max = self.limits.hot_max;
        if self.cold.is_none() || self.transactions.len() <= hot_max {
            return;
        }
        // Some room below the bound, so that the next spill is not at the next request.
        let slack = (hot_max / 16).clamp(1, SPILL_PIECE);
        let mut moved = 0;
        while self.transactions.len() + slack > hot_max && moved < 2 * SPILL_PIECE {
            let queue = match (self.holds_by_age.front(), self.postings_by_age.front()) {
                (Some(hold), Some(posting)) if posting.0 < hold.0 => Queue::Postings,
                (Some(_), _) => Queue::Holds,
                (None, Some(_)) => Queue::Postings,
                (None, None) => break,
            };
            let entry = match queue {
                Queue::Holds => self.holds_by_age.pop_front(),
                Queue::Postings => self.postings_by_age.pop_front(),
            };
            let Some((due, key)) = entry else { break };
            let seq = self.span(queue).back;
            let record = self.transactions.remove(&key);
            let Some(cold) = &mut self.cold else { break };
            cold.push_age(queue, seq, (due, key));
            // Never on disk too: a key is remembered in memory only after a lookup in both
            // found nothing (the duplicate check of `apply`, or `reverse` for a reversal that
            // came first), or in replay where the log says this release approved it, which it
            // would not have had the key been anywhere; and stays where it is until it is
            // spilled or taken.
            if let Some(record) = record {
                cold.insert_new(&key, &record);
                self.cold_state.count += 1;
                if record.state == State::ReversedBeforeArrival {
                    self.cold_state.tombstones += 1;
                }
            }
            self.span_mut(queue).back += 1;
            self.cold_dirty = true;
            moved += 1;
        }
    }

    /// Ends one change of the state: what it wrote to disk becomes one version.
    fn commit_cold(&mut self) {
        if !self.cold_dirty {
            return;
        }
        self.cold_dirty = false;
        self.cold_state.version += 1;
        if let Some(cold) = &mut self.cold {
            cold.commit(self.cold_state.version);
        }
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

    /// Applies one request that routing sent to this shard. `now_seconds` is the decision's
    /// time, which the WAL records with it: expiry and the reversal window are measured by it.
    pub fn apply(&mut self, request: &Posting, now_seconds: u64) -> Outcome {
        let outcome = self.apply_inner(request, now_seconds, false);
        self.commit_cold();
        outcome
    }

    /// [`LedgerShard::apply`] for recovery's replay, which trusts the log in one thing:
    /// `approved_under_these_rules`, the log says this release's rules approved the request.
    ///
    /// Such a request found no transaction under its own key (any would have declined it), so
    /// the duplicate check does not look for one on disk: before the filter of the keys on
    /// disk is rebuilt (tens of seconds after a long run), each such lookup read the store,
    /// and most of a replay is new transactions (bench/RESULTS.md, "restart after the
    /// 30-minute soak"). It is still looked for in memory, and every other lookup is made as
    /// live. An entry of an earlier release, whose rules differ, is not trusted: a completion
    /// of then reused its hold's key, which these rules decline, and replay must say so.
    pub(crate) fn replay(
        &mut self,
        request: &Posting,
        now_seconds: u64,
        approved_under_these_rules: bool,
    ) -> Outcome {
        let outcome = self.apply_inner(request, now_seconds, approved_under_these_rules);
        self.commit_cold();
        outcome
    }

    fn apply_inner(&mut self, request: &Posting, now_seconds: u64, key_new: bool) -> Outcome {
        let Some(account) = self.accounts.get(&request.card).copied() else {
            return Outcome::decline(ResponseCode::InvalidCardNumber);
        };
        if let Some(original) = request.original
            && original.acquirer != request.key.acquirer
        {
            // Nobody completes or reverses another acquirer's transaction.
            return Outcome::decline(ResponseCode::NotPermittedToTerminal);
        }
        if request.kind.is_reversal() {
            return self.reverse(request, now_seconds);
        }
        let existing = match request.kind {
            Kind::BalanceInquiry => None,
            _ if key_new => self.transactions.get(&request.key).copied(),
            _ => self.transaction(&request.key),
        };
        if let Some(existing) = existing {
            if existing.state == State::ReversedBeforeArrival && existing.card == request.card {
                // Its reversal came first: the acquirer already counts it as undone.
                return Outcome::decline(ResponseCode::InvalidTransaction);
            }
            // Same acquirer, terminal, STAN and time: a key still held by another transaction
            // (a retransmission would have been answered from the idempotency table).
            return Outcome::decline(ResponseCode::DuplicateTransmission);
        }
        if request.currency.is_some_and(|c| c != account.currency) {
            return Outcome::decline(ResponseCode::InvalidTransaction);
        }
        if request.kind == Kind::Completion {
            return self.complete(request, now_seconds);
        }
        // An advice reports a decision already taken elsewhere: it is recorded beyond the
        // balance and the card's limit, but a blocked card takes nothing, advice or not (the
        // stand-in should not have approved it: the acquirer's exception handling takes it).
        if account.blocked {
            return Outcome::decline(ResponseCode::RestrictedCard);
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
        if self.transaction_count() >= self.limits.transactions_max {
            return Outcome::decline(ResponseCode::SystemMalfunction);
        }
        let amount = signed(request.amount);
        let fits = match request.kind {
            Kind::Authorization | Kind::AuthorizationAdvice => account.held.checked_add(amount),
            _ => account.ledger.checked_add(amount),
        };
        if fits.is_none() {
            // Beyond what an account can count: no amount of a 12-digit field gets here but
            // after millions of the largest ones, yet it must not wrap.
            return Outcome::decline(ResponseCode::InvalidAmount);
        }
        let acquirer = request.key.acquirer;
        match request.kind {
            Kind::Authorization | Kind::AuthorizationAdvice => self.hold(request.card, amount),
            Kind::Purchase | Kind::CashWithdrawal => self.transfer(request.card, acquirer, -amount),
            Kind::Refund | Kind::Deposit => self.transfer(request.card, acquirer, amount),
            Kind::BalanceInquiry | Kind::Completion | Kind::Reversal | Kind::ReversalAdvice => {
                unreachable!("handled above")
            }
        }
        self.remember(
            request.key,
            Record::new(request.card, request.kind, request.amount),
            now_seconds,
        );
        // An advice reports a decision taken elsewhere, under that party's authorization code.
        self.approve_with_balances(request.card, request.kind != Kind::AuthorizationAdvice)
    }

    fn remember(&mut self, key: TxnKey, record: Record, now_seconds: u64) {
        if record.kind.is_hold() {
            self.holds_by_age.push_back((now_seconds, key));
        } else {
            // Kept for the reversal window from the later of the decision and the key's field 7
            // (at most a day ahead): a reversal is remembered as overtaking its original only
            // while that field 7 is within the window, so a posting must not be forgotten
            // sooner, or a reversal of it would be approved without returning anything.
            let sent = transmission_unix_seconds(key.transmission, now_seconds).unwrap_or(0);
            self.postings_by_age.push_back((now_seconds.max(sent), key));
        }
        self.transactions.insert(key, record);
        self.spill();
    }

    /// A completion (0220): captures from what remains authorized on the hold it names.
    fn complete(&mut self, request: &Posting, now_seconds: u64) -> Outcome {
        let Some(original) = request.original else {
            return Outcome::decline(ResponseCode::FormatError);
        };
        let Some(hold) = self.transaction(&original) else {
            return Outcome::decline(ResponseCode::OriginalNotFound);
        };
        if hold.card != request.card {
            return Outcome::decline(ResponseCode::OriginalNotFound);
        }
        let Part::Hold { held, captured } = hold.part else {
            return Outcome::decline(ResponseCode::InvalidTransaction);
        };
        if hold.state != State::Live || hold.effective == 0 {
            // Its reversal came first, or it was reversed.
            return Outcome::decline(ResponseCode::InvalidTransaction);
        }
        let remaining = hold.effective.saturating_sub(captured);
        if request.amount == 0 || request.amount > remaining {
            return Outcome::decline(ResponseCode::InvalidAmount);
        }
        if self.transaction_count() >= self.limits.transactions_max {
            return Outcome::decline(ResponseCode::SystemMalfunction);
        }
        // The capture moves the money; whatever is still held is released with it.
        self.release(request.card, signed(held));
        self.transfer(request.card, original.acquirer, -signed(request.amount));
        self.update(
            original,
            Record {
                part: Part::Hold {
                    held: 0,
                    captured: captured + request.amount,
                },
                ..hold
            },
        );
        let mut record = Record::new(request.card, Kind::Completion, request.amount);
        record.part = Part::Capture {
            stan: original.stan,
            transmission: original.transmission,
        };
        self.remember(request.key, record, now_seconds);
        self.approve_with_balances(request.card, false)
    }

    /// Whether a transaction sent at `transmission` (field 7, MMDDhhmmss) may still arrive at
    /// `now_seconds`: within the reversal window of it, allowing a day of clock skew ahead.
    fn could_still_arrive(&self, transmission: u64, now_seconds: u64) -> bool {
        transmission_unix_seconds(transmission, now_seconds).is_some_and(|sent| {
            now_seconds.saturating_sub(sent) < self.limits.reversal_window_seconds
        })
    }

    /// A reversal (0400/0401, 0420/0421): sets what the original amounts to.
    fn reverse(&mut self, request: &Posting, now_seconds: u64) -> Outcome {
        let Some(original) = request.original else {
            return Outcome::decline(ResponseCode::FormatError);
        };
        let Some(mut record) = self.transaction(&original) else {
            // Overtaken by its own reversal (or never approved): acknowledged and remembered,
            // so that the original, if it comes, moves no money. A partial reversal says some
            // of the original happened, so it presupposes an approval the switch would know.
            if request.replacement.is_some_and(|r| r > 0)
                || !self.could_still_arrive(original.transmission, now_seconds)
            {
                return Outcome::decline(ResponseCode::OriginalNotFound);
            }
            if self.transaction_count() >= self.limits.transactions_max {
                return Outcome::decline(ResponseCode::SystemMalfunction);
            }
            if self.reversed_first >= self.limits.transactions_max / REVERSED_FIRST_SHARE {
                // Remembered reversals take table space for a whole window and need no funds:
                // bounded to a share of the table, so they cannot crowd out real transactions.
                return Outcome::decline(ResponseCode::OriginalNotFound);
            }
            let mut tombstone = Record::new(request.card, request.kind, request.amount);
            tombstone.effective = 0;
            tombstone.part = Part::Other;
            tombstone.state = State::ReversedBeforeArrival;
            self.reversed_first += 1;
            self.remember(original, tombstone, now_seconds);
            return self.approve_with_balances(request.card, false);
        };
        if record.card != request.card {
            return Outcome::decline(ResponseCode::OriginalNotFound);
        }
        if record.state == State::ReversedBeforeArrival {
            // A further reversal of a transaction that never arrived: nothing to move.
            return self.approve_with_balances(request.card, false);
        }
        // Field 4 repeats the original's amount; what really happened, if less, is field 95.
        let replacement = request.replacement.unwrap_or(0);
        if request.amount != record.amount || replacement > record.amount {
            return Outcome::decline(ResponseCode::InvalidAmount);
        }
        // Reversals only ever lower a transaction: a second one returns nothing twice.
        let target = replacement.min(record.effective);
        let back = record.effective - target;
        let acquirer = original.acquirer;
        // (`back` is what returns; it never exceeds what the transaction still amounted to.)
        match (record.part, record.kind) {
            (Part::Hold { held, captured }, _) => {
                if target < captured {
                    // Captured money moved under the completions' own keys.
                    return Outcome::decline(ResponseCode::InvalidTransaction);
                }
                let keep = held.min(target - captured);
                self.release(record.card, signed(held - keep));
                record.part = Part::Hold {
                    held: keep,
                    captured,
                };
            }
            (Part::Capture { stan, transmission }, _) => {
                self.transfer(record.card, acquirer, signed(back));
                // The hold it captured from may capture that much again.
                let hold = TxnKey {
                    stan,
                    transmission,
                    ..original
                };
                if let Some(mut stored) = self.transaction(&hold)
                    && stored.card == record.card
                    && let Part::Hold { held, captured } = stored.part
                {
                    stored.part = Part::Hold {
                        held,
                        captured: captured.saturating_sub(back),
                    };
                    self.update(hold, stored);
                }
            }
            (Part::Other, Kind::Purchase | Kind::CashWithdrawal) => {
                self.transfer(record.card, acquirer, signed(back));
            }
            (Part::Other, Kind::Refund | Kind::Deposit) => {
                self.transfer(record.card, acquirer, -signed(back));
            }
            (Part::Other, _) => {
                return Outcome::decline(ResponseCode::InvalidTransaction);
            }
        }
        record.effective = target;
        self.update(original, record);
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
            if account.held < 0 {
                // A hold is released only for what it still holds, so this is a defect. It
                // must not panic: the shard's thread would die, and replay, repeating the same
                // records, would panic again at every restart. Kept at zero (replay does the
                // same, so it agrees with the live run), and said loudly.
                tracing::error!(
                    %card,
                    held = account.held,
                    "held balance went negative: set to 0 (a defect: report it)"
                );
                account.held = 0;
            }
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

    /// Field 38 for an approval: see [`auth_id`].
    pub fn next_auth_id(&mut self) -> [u8; 6] {
        self.auth_counter = self.auth_counter.wrapping_add(1);
        auth_id(self.auth_counter, self.index)
    }

    /// Every expiry due at `now_seconds`, however many: for tests and tools. The switch works
    /// in bounded pieces ([`LedgerShard::expire_bounded`]).
    pub fn expire(&mut self, now_seconds: u64) -> Expiry {
        self.expire_bounded(now_seconds, u32::MAX, u32::MAX)
    }

    /// Takes off up to `holds_max` holds past their expiry (releasing what they still hold)
    /// and forgets up to `postings_max` transactions past the reversal window, oldest first.
    ///
    /// Time enters the ledger here, so the WAL records each call with its arguments and its
    /// result, and replay makes the same call at the same time: given the same state, it does
    /// the same. The bounds keep one call (and its record) small however much falls due at
    /// once; what is left is reported in [`Expiry::more`] for the next call.
    pub fn expire_bounded(
        &mut self,
        now_seconds: u64,
        holds_max: u32,
        postings_max: u32,
    ) -> Expiry {
        self.expire_step(&self.expiry_step(now_seconds, holds_max, postings_max))
    }

    /// The expiry step at `now_seconds` under this shard's configured limits.
    pub fn expiry_step(&self, now_seconds: u64, holds_max: u32, postings_max: u32) -> ExpiryStep {
        ExpiryStep {
            at_seconds: now_seconds,
            hold_expiry_seconds: self.limits.hold_expiry_seconds,
            reversal_window_seconds: self.limits.reversal_window_seconds,
            holds_max,
            postings_max,
        }
    }

    /// One expiry step with every argument given, as the WAL records it: replay repeats it
    /// with the limits of its time, whatever the configuration says now.
    pub fn expire_step(&mut self, step: &ExpiryStep) -> Expiry {
        let done = self.expire_step_inner(step);
        self.commit_cold();
        done
    }

    fn expire_step_inner(&mut self, step: &ExpiryStep) -> Expiry {
        let ExpiryStep {
            at_seconds: now_seconds,
            hold_expiry_seconds,
            reversal_window_seconds,
            holds_max,
            postings_max,
        } = *step;
        let mut done = Expiry::default();
        while let Some((created, key)) = self.front(Queue::Holds) {
            if now_seconds.saturating_sub(created) < hold_expiry_seconds {
                break;
            }
            if done.holds == holds_max {
                done.more = true;
                break;
            }
            self.pop_front(Queue::Holds);
            done.holds += 1;
            if let Some(record) = self.take(&key)
                && record.held() > 0
            {
                self.release(record.card, signed(record.held()));
                done.released += 1;
            }
        }
        // In order of decision, each due a window after the later of its decision and field 7:
        // one sent with a clock ahead holds back those behind it by that much, a day at most.
        while let Some((created, key)) = self.front(Queue::Postings) {
            if now_seconds.saturating_sub(created) < reversal_window_seconds {
                break;
            }
            if done.forgotten == postings_max {
                done.more = true;
                break;
            }
            self.pop_front(Queue::Postings);
            done.forgotten += 1;
            if let Some(record) = self.take(&key)
                && record.state == State::ReversedBeforeArrival
            {
                self.reversed_first = self.reversed_first.saturating_sub(1);
            }
        }
        done
    }

    /// Replays the release of one hold that [`LedgerShard::expire`] released before a restart.
    /// False if there is no such open hold (which replay reports as a mismatch).
    pub fn release_expired(&mut self, key: &TxnKey) -> bool {
        let released = match self.transaction(key) {
            Some(record) if record.held() > 0 => {
                self.take(key);
                self.release(record.card, signed(record.held()));
                true
            }
            _ => false,
        };
        self.commit_cold();
        released
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
        hot_max: 1_000,
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

    /// A release beyond what is held (a defect elsewhere) leaves the held balance at zero
    /// instead of panicking the shard's thread, and the rest of the account as it was.
    #[test]
    fn a_release_beyond_the_held_balance_does_not_panic() {
        let mut shard = shard();
        shard.hold(token(0), 300);
        shard.release(token(0), 500);
        let account = shard.account(&token(0)).unwrap();
        assert_eq!(account.held, 0);
        assert_eq!(account.ledger, 10_000);
        let total = shard.total();
        shard.release(token(0), 1);
        assert_eq!(shard.account(&token(0)).unwrap().held, 0);
        assert_eq!(shard.total(), total);
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
            replacement: None,
        }
    }

    /// A reversal of `original_stan` down to `replacement` (field 95).
    fn partial(
        kind: Kind,
        card: u64,
        amount: Minor,
        stan: u32,
        original_stan: u32,
        replacement: Minor,
    ) -> Posting {
        let mut r = referring(kind, card, amount, stan, original_stan);
        r.replacement = Some(replacement);
        r
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

    /// 2026-11-26 14:30:15 UTC: the field 7 of every test request.
    const NOW: u64 = 1_795_703_415;

    /// Applies each step and checks (code, available, ledger) after it, and conservation.
    fn check(steps: &[(Posting, ResponseCode, i64, i64)]) {
        let mut shard = shard();
        let total = shard.total();
        for (i, (request, code, available, ledger)) in steps.iter().enumerate() {
            let outcome = shard.apply(request, NOW);
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

    /// A snapshot copies into the last one's image, handed back emptied: whatever that held,
    /// the copy is the shard's state exactly, as a fresh image would be.
    #[test]
    fn an_image_copied_into_an_old_one_is_the_state_exactly() {
        use Kind::*;
        let mut shard = shard();
        for stan in 1..=5 {
            shard.apply(&request(Authorization, 0, 100, stan), NOW);
        }
        shard.apply(&request(Purchase, 0, 70, 6), NOW);
        let mut old = shard.image();
        assert!(old.transactions.len() >= 6 && old.auth_counter > 0);
        // Older and larger than the next one: a mass expiry came between them, say.
        old.transactions
            .extend_from_slice(&old.transactions.clone());
        old.holds_by_age.push((NOW, old.transactions[0].0));
        old.clear();
        assert_eq!(
            (old.transactions.len(), old.auth_counter, old.cold),
            (0, 0, ColdState::default())
        );
        shard.apply(&referring(Reversal, 0, 100, 8, 2), NOW);
        // Dirty, not cleared: image_into must not keep anything of it either.
        let mut dirty = shard.image();
        dirty.settlement.push((99, 1));
        shard.image_into(&mut old);
        shard.image_into(&mut dirty);
        assert_eq!(old, shard.image());
        assert_eq!(dirty, shard.image());
    }

    /// A snapshot's view is the state when it was taken, whatever the shard does after it
    /// (new holds and postings, completions, reversals, expiry of both queues): its image
    /// equals the image copied at that moment, and the shard goes on as if no view existed.
    #[test]
    fn a_view_is_the_state_when_taken_whatever_the_shard_does_after_it() {
        use Kind::*;
        let mut twin = shard();
        let mut shard = shard();
        let mut views = Vec::new();
        for stan in 1..=300u32 {
            let at = NOW + u64::from(stan);
            let step = match stan % 5 {
                0 => referring(Completion, 0, 3, stan, stan - 1),
                1 => request(Authorization, 0, 5, stan),
                2 => request(Purchase, 0, 2, stan),
                3 => referring(Reversal, 0, 2, stan, stan - 1),
                _ => request(Authorization, 4, 7, stan),
            };
            assert_eq!(shard.apply(&step, at), twin.apply(&step, at), "step {stan}");
            if stan % 40 == 0 {
                // Beyond the hold expiry and reversal window of the first ones.
                let expired = shard.expire_bounded(at, 7, 7);
                assert_eq!(expired, twin.expire_bounded(at, 7, 7));
                views.push((shard.view(), shard.image()));
            }
        }
        assert!(views.len() >= 7 && shard.transaction_count() > 100);
        for (view, image) in &views {
            let mut copied = ShardImage::default();
            view.image_into(&mut copied);
            assert_eq!(copied, *image);
        }
        assert!(shard.image().same_state(&twin.image()));
        assert_eq!(shard.total(), twin.total());
    }

    /// A tier in memory that counts its reads.
    #[derive(Debug, Default)]
    struct CountingTier {
        inner: MemoryTier,
        reads: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl ColdTier for CountingTier {
        fn get(&self, key: &TxnKey) -> Option<Record> {
            self.reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.inner.get(key)
        }
        fn put(&mut self, key: &TxnKey, record: &Record) {
            self.inner.put(key, record);
        }
        fn insert_new(&mut self, key: &TxnKey, record: &Record) {
            self.inner.insert_new(key, record);
        }
        fn remove(&mut self, key: &TxnKey) -> Option<Record> {
            self.inner.remove(key)
        }
        fn push_age(&mut self, queue: Queue, seq: u64, entry: (u64, TxnKey)) {
            self.inner.push_age(queue, seq, entry);
        }
        fn age(&self, queue: Queue, seq: u64) -> Option<(u64, TxnKey)> {
            self.inner.age(queue, seq)
        }
        fn remove_age(&mut self, queue: Queue, seq: u64) {
            self.inner.remove_age(queue, seq);
        }
        fn commit(&mut self, version: u64) {
            self.inner.commit(version);
        }
        fn failure(&self) -> Option<String> {
            None
        }
        fn all(&self) -> Vec<(TxnKey, Record)> {
            self.inner.all()
        }
    }

    /// Replay of a new transaction the log says was approved does not read the store for
    /// its duplicate check; one declined as a duplicate does, as live, and so does the
    /// completion of a transaction on disk. An entry not trusted (of an earlier release)
    /// reads as live, and a completion reusing its hold's key is declined, not approved.
    #[test]
    fn replay_reads_the_store_only_where_the_log_does_not_answer_for_it() {
        use Kind::*;
        let limits = ShardLimits {
            hot_max: 2,
            ..LIMITS
        };
        let reads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tier = CountingTier {
            reads: reads.clone(),
            ..CountingTier::default()
        };
        let mut live = LedgerShard::from_image(0, limits, shard().image());
        let mut replayed =
            LedgerShard::from_image(0, limits, shard().image()).with_cold(Box::new(tier));
        let count = || reads.load(std::sync::atomic::Ordering::Relaxed);
        let mut replay = |replayed: &mut LedgerShard, request: &Posting| {
            let outcome = live.apply(request, NOW);
            let again = replayed.replay(request, NOW, outcome.code.is_approved());
            assert_eq!(again, outcome);
            outcome
        };
        for stan in 1..=10 {
            let outcome = replay(&mut replayed, &request(Authorization, 4, 10, stan));
            assert_eq!(outcome.code, ResponseCode::Approved);
        }
        assert!(replayed.transaction_count() > replayed.hot_count());
        // Ten approvals, the later ones with transactions on disk: not one read.
        assert_eq!(count(), 0);
        // The first hold again (on disk by now): declined as a duplicate, read like live.
        let again = replay(&mut replayed, &request(Authorization, 4, 10, 1));
        assert_eq!(again.code, ResponseCode::DuplicateTransmission);
        assert_eq!(count(), 1);
        // Its completion reads it.
        let completed = replay(&mut replayed, &referring(Completion, 4, 10, 20, 1));
        assert_eq!(completed.code, ResponseCode::Approved);
        assert_eq!(count(), 2);
        assert!(live.full_image().same_state(&replayed.full_image()));
        // A new request applied as live reads for its duplicate check.
        replayed.apply(&request(Authorization, 4, 10, 21), NOW);
        assert_eq!(count(), 3);
        // An earlier release's completion under its hold's key (on disk), logged as approved:
        // not trusted, it is looked for on disk and declined, which stops the start.
        let reused = referring(Completion, 4, 10, 2, 2);
        let again = replayed.replay(&reused, NOW, false);
        assert_eq!(again.code, ResponseCode::DuplicateTransmission);
        assert_eq!(count(), 4);
    }

    /// Reserving room for a count of transactions counts those already held: after a
    /// snapshot's hot window is loaded, the table is not doubled.
    #[test]
    fn reserving_counts_what_is_held() {
        use Kind::*;
        let mut shard = shard();
        for stan in 1..=40 {
            shard.apply(&request(Authorization, 4, 1, stan), NOW);
        }
        let held = shard.transactions.len();
        assert_eq!(held, 40);
        let mut loaded = LedgerShard::from_image(0, LIMITS, shard.image());
        loaded.reserve_transactions(896);
        let capacity = loaded.transactions.capacity();
        assert!(capacity >= 896);
        // Already room: nothing changes.
        loaded.reserve_transactions(500);
        assert_eq!(loaded.transactions.capacity(), capacity);
    }

    #[test]
    fn a_record_stays_small() {
        // Millions are kept per shard: what only some transactions need is in `Part`.
        assert!(std::mem::size_of::<Record>() <= 80);
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
            // A reversal before its original: acknowledged, and the original moves nothing.
            (
                referring(ReversalAdvice, 0, 3_000, 6, 99),
                Approved,
                10_000,
                10_000,
            ),
            (
                request(Authorization, 0, 3_000, 99),
                InvalidTransaction,
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
            // Captures 3,500 and releases the rest of the hold.
            (
                referring(Completion, 0, 3_500, 3, 1),
                Approved,
                6_500,
                6_500,
            ),
            // A split shipment: 500 remain authorized.
            (
                referring(Completion, 0, 501, 4, 1),
                InvalidAmount,
                6_500,
                6_500,
            ),
            (referring(Completion, 0, 500, 5, 1), Approved, 6_000, 6_000),
            // The hold's captures moved under their own keys: reverse those.
            (
                referring(Reversal, 0, 4_000, 6, 1),
                InvalidTransaction,
                6_000,
                6_000,
            ),
            (referring(Reversal, 0, 3_500, 7, 3), Approved, 9_500, 9_500),
            (referring(Reversal, 0, 3_500, 8, 3), Approved, 9_500, 9_500),
            // What the undone capture took is authorized again.
            (
                referring(Completion, 0, 3_500, 9, 1),
                Approved,
                6_000,
                6_000,
            ),
            (
                partial(Reversal, 0, 3_500, 10, 9, 1_000),
                Approved,
                8_500,
                8_500,
            ),
            (referring(Reversal, 0, 3_500, 11, 9), Approved, 9_500, 9_500),
            (referring(Reversal, 0, 500, 12, 5), Approved, 10_000, 10_000),
            // Nothing captured any more: the authorization itself may be reversed, and is then
            // closed to completions.
            (
                referring(Reversal, 0, 4_000, 13, 1),
                Approved,
                10_000,
                10_000,
            ),
            (
                referring(Completion, 0, 100, 14, 1),
                InvalidTransaction,
                10_000,
                10_000,
            ),
        ]);
    }

    #[test]
    fn partial_reversals_return_only_the_difference() {
        use Kind::*;
        use ResponseCode::*;
        check(&[
            // An ATM that dispensed 70.00 of 100.00.
            (request(CashWithdrawal, 0, 10_000, 1), Approved, 0, 0),
            (
                partial(ReversalAdvice, 0, 10_000, 2, 1, 7_000),
                Approved,
                3_000,
                3_000,
            ),
            // The same reversal again, and one to a larger amount, return nothing more.
            (
                partial(ReversalAdvice, 0, 10_000, 3, 1, 7_000),
                Approved,
                3_000,
                3_000,
            ),
            (
                partial(Reversal, 0, 10_000, 4, 1, 9_000),
                Approved,
                3_000,
                3_000,
            ),
            (
                partial(Reversal, 0, 10_000, 5, 1, 10_001),
                InvalidAmount,
                3_000,
                3_000,
            ),
            // Zero in field 95 is a full reversal.
            (
                partial(Reversal, 0, 10_000, 6, 1, 0),
                Approved,
                10_000,
                10_000,
            ),
            // On a hold, a partial reversal lowers the hold and what may be captured.
            (request(Authorization, 0, 8_000, 7), Approved, 2_000, 10_000),
            (
                partial(Reversal, 0, 8_000, 8, 7, 5_000),
                Approved,
                5_000,
                10_000,
            ),
            (
                referring(Completion, 0, 5_001, 9, 7),
                InvalidAmount,
                5_000,
                10_000,
            ),
            (
                referring(Completion, 0, 4_000, 10, 7),
                Approved,
                6_000,
                6_000,
            ),
            // Down to what was captured: nothing was held any more, nothing moves.
            (
                partial(Reversal, 0, 8_000, 11, 7, 4_000),
                Approved,
                6_000,
                6_000,
            ),
            (
                partial(Reversal, 0, 8_000, 12, 7, 3_999),
                InvalidTransaction,
                6_000,
                6_000,
            ),
            // A deposit reversed in part takes back only what did not happen.
            (request(Deposit, 0, 1_000, 13), Approved, 7_000, 7_000),
            (
                partial(Reversal, 0, 1_000, 14, 13, 400),
                Approved,
                6_400,
                6_400,
            ),
        ]);
    }

    #[test]
    fn a_reversal_before_its_original_is_remembered_for_the_window() {
        use Kind::*;
        use ResponseCode::*;
        let mut shard = shard();
        let reversal = referring(ReversalAdvice, 0, 2_500, 2, 1);
        assert_eq!(shard.apply(&reversal, NOW).code, Approved);
        assert_eq!(
            shard.apply(&referring(Reversal, 0, 2_500, 3, 1), NOW).code,
            Approved,
            "a repeat of it"
        );
        let late = request(Purchase, 0, 2_500, 1);
        assert_eq!(shard.apply(&late, NOW + 1).code, InvalidTransaction);
        assert_eq!(shard.account(&token(0)).unwrap().ledger, 10_000);
        assert_eq!(
            shard.apply(&request(Purchase, 1, 2_500, 1), NOW + 1).code,
            DuplicateTransmission,
            "another card under that key is not the original"
        );
        // A partial reversal says part of the original happened: it cannot come first.
        assert_eq!(
            shard
                .apply(&partial(ReversalAdvice, 0, 500, 7, 88, 200), NOW)
                .code,
            OriginalNotFound
        );
        // An original older than the reversal window can no longer arrive: 25.
        let old = referring(Reversal, 0, 0, 4, 77);
        assert_eq!(shard.apply(&old, NOW + 51).code, OriginalNotFound);
        // Another card than the original's.
        assert_eq!(
            shard.apply(&request(Purchase, 0, 100, 5), NOW).code,
            Approved
        );
        assert_eq!(
            shard.apply(&referring(Reversal, 4, 100, 6, 5), NOW).code,
            OriginalNotFound
        );
        // Field 4 of a reversal repeats the original's amount; a partial one says so in 95.
        assert_eq!(
            shard.apply(&referring(Reversal, 0, 99, 8, 5), NOW).code,
            InvalidAmount
        );
        assert_eq!(shard.account(&token(0)).unwrap().ledger, 9_900);
    }

    #[test]
    fn reversals_before_their_original_take_at_most_a_share_of_the_table() {
        let mut shard = shard();
        let share = LIMITS.transactions_max / REVERSED_FIRST_SHARE;
        for stan in 0..u32::try_from(share).unwrap() {
            let reversal = referring(Kind::Reversal, 0, 1, 10_000 + stan, stan);
            assert_eq!(shard.apply(&reversal, NOW).code, ResponseCode::Approved);
        }
        let one_more = referring(Kind::Reversal, 0, 1, 20_000, 9_999);
        assert_eq!(
            shard.apply(&one_more, NOW).code,
            ResponseCode::OriginalNotFound
        );
        // Room again once they leave the window; an image keeps the count.
        let restored = LedgerShard::from_image(0, LIMITS, shard.image());
        assert_eq!(restored.reversed_first, share);
        shard.expire(NOW + LIMITS.reversal_window_seconds);
        let mut later = one_more;
        // Its original sent 50 s later (14:31:05), within the window of the new now.
        later.original = later.original.map(|k| TxnKey {
            transmission: 1_126_143_105,
            ..k
        });
        assert_eq!(
            shard
                .apply(&later, NOW + LIMITS.reversal_window_seconds)
                .code,
            ResponseCode::Approved
        );
    }

    #[test]
    fn a_posting_with_a_field_7_ahead_is_kept_a_window_after_that() {
        let mut shard = shard();
        let mut ahead = request(Kind::Purchase, 0, 100, 1);
        // 15:30:15, an hour after the decision.
        ahead.key.transmission = 1_126_153_015;
        assert_eq!(shard.apply(&ahead, NOW).code, ResponseCode::Approved);
        shard.expire(NOW + 3_600 + LIMITS.reversal_window_seconds - 1);
        assert_eq!(
            shard.transaction_count(),
            1,
            "kept while a reversal may name it"
        );
        shard.expire(NOW + 3_600 + LIMITS.reversal_window_seconds);
        assert_eq!(shard.transaction_count(), 0);
    }

    #[test]
    fn an_account_cannot_count_beyond_its_range() {
        let mut shard = shard();
        shard.open_account(token(5), Account::new(i64::MAX - 10, 840));
        assert_eq!(
            shard.apply(&request(Kind::Deposit, 5, 11, 1), NOW).code,
            ResponseCode::InvalidAmount
        );
        assert_eq!(
            shard.apply(&request(Kind::Deposit, 5, 10, 2), NOW).code,
            ResponseCode::Approved
        );
    }

    #[test]
    fn nobody_settles_another_acquirers_transaction() {
        use Kind::*;
        use ResponseCode::*;
        let mut shard = shard();
        assert_eq!(
            shard.apply(&request(Authorization, 0, 1_000, 1), NOW).code,
            Approved
        );
        for kind in [Completion, Reversal, ReversalAdvice] {
            let mut foreign = referring(kind, 0, 1_000, 2, 1);
            foreign.key.acquirer = 654_321;
            assert_eq!(
                shard.apply(&foreign, NOW).code,
                NotPermittedToTerminal,
                "{kind:?}"
            );
        }
        assert_eq!(shard.account(&token(0)).unwrap().available(), 9_000);
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
            (
                referring(Reversal, 0, 2_500, 5, 1),
                Approved,
                12_500,
                12_500,
            ),
            (
                referring(Reversal, 0, 2_000, 6, 4),
                Approved,
                10_500,
                10_500,
            ),
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
        assert_eq!(shard.expire(60).forgotten, 1);
        assert_eq!(
            shard.transaction_count(),
            1,
            "posting forgotten after the window"
        );
        assert_eq!(
            shard.expire(110),
            Expiry {
                holds: 1,
                released: 1,
                forgotten: 0,
                more: false
            }
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
    fn the_expiry_lag_is_how_long_the_oldest_overdue_hold_has_waited() {
        let mut shard = shard();
        assert_eq!(shard.expiry_lag(1_000), 0, "no holds");
        shard.apply(&request(Kind::Authorization, 0, 100, 1), 10);
        shard.apply(&request(Kind::Authorization, 0, 100, 2), 20);
        assert_eq!(shard.expiry_lag(109), 0, "not due yet");
        assert_eq!(shard.expiry_lag(115), 5, "due at 110, still held");
        assert_eq!(shard.expire_bounded(115, 1, 1).released, 1);
        assert_eq!(shard.expiry_lag(125), 5, "the next, due at 120");
        assert_eq!(shard.expire(125).released, 1);
        assert_eq!(shard.expiry_lag(1_000), 0, "all released");
    }

    #[test]
    fn an_expiry_replays_exactly() {
        let mut live = shard();
        let mut replayed = shard();
        let hold = request(Kind::Authorization, 0, 1_000, 1);
        live.apply(&hold, 10);
        replayed.apply(&hold, 10);
        let released = live.expire(500);
        assert_eq!(released.released, 1);
        // Records of the first format listed the released holds; they still replay.
        let key = request(Kind::Authorization, 0, 0, 1).key;
        assert!(replayed.release_expired(&key));
        assert!(!replayed.release_expired(&key), "released once");
        assert_eq!(replayed.account(&token(0)), live.account(&token(0)));
    }

    #[test]
    fn expiry_works_in_bounded_pieces_that_replay_exactly() {
        let mut live = shard();
        for stan in 0..10 {
            live.apply(&request(Kind::Authorization, 0, 100, stan), 10);
            live.apply(&request(Kind::Purchase, 0, 100, 100 + stan), 10);
        }
        let mut replayed = LedgerShard::from_image(0, LIMITS, live.image());
        let mut pieces = Vec::new();
        loop {
            let done = live.expire_bounded(500, 3, 4);
            pieces.push(done);
            if !done.more {
                break;
            }
        }
        assert_eq!(
            pieces
                .iter()
                .map(|p| (p.holds, p.forgotten))
                .collect::<Vec<_>>(),
            vec![(3, 4), (3, 4), (3, 2), (1, 0)]
        );
        assert_eq!(live.transaction_count(), 0);
        assert_eq!(live.account(&token(0)).unwrap().held, 0);
        for done in pieces {
            assert_eq!(replayed.expire_bounded(500, 3, 4), done);
        }
        assert_eq!(replayed.account(&token(0)), live.account(&token(0)));
    }

    #[test]
    fn a_million_holds_expire_in_pieces_of_a_bounded_size() {
        let mut shard = LedgerShard::new(
            0,
            ShardLimits {
                transactions_max: 2_000_000,
                ..LIMITS
            },
        );
        shard.open_account(token(0), Account::new(10_000_000, 840));
        for stan in 0..1_000_000 {
            assert!(
                shard
                    .apply(&request(Kind::Authorization, 0, 1, stan), 10)
                    .code
                    .is_approved()
            );
        }
        let mut pieces = 0;
        while shard
            .expire_bounded(10 + LIMITS.hold_expiry_seconds, 4_096, 4_096)
            .more
        {
            pieces += 1;
        }
        assert_eq!(pieces, 1_000_000 / 4_096);
        assert_eq!(shard.account(&token(0)).unwrap().held, 0);
    }

    #[test]
    fn resharding_two_shards_that_kept_the_same_key_keeps_the_transaction() {
        // A reversal remembered for card 0 under key 7, and card 1's purchase under the same
        // key in another shard: one table after the merge keeps the purchase, and only its
        // queue entry.
        let mut first = shard();
        assert!(
            first
                .apply(&referring(Kind::Reversal, 0, 100, 8, 7), NOW)
                .code
                .is_approved()
        );
        let mut second = shard();
        let mut purchase = request(Kind::Purchase, 4, 100, 7);
        purchase.key = referring(Kind::Reversal, 0, 100, 8, 7).original.unwrap();
        assert!(second.apply(&purchase, NOW).code.is_approved());
        let merged = reshard(vec![first.image(), second.image()], 1).remove(0);
        let kept: Vec<_> = merged
            .transactions
            .iter()
            .map(|(_, r)| (r.card, r.state))
            .collect();
        assert_eq!(kept, [(token(4), State::Live)]);
        assert_eq!(
            merged.postings_by_age.len(),
            1,
            "the dropped record's entry went with it"
        );
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
    fn auth_ids_are_six_characters_and_do_not_repeat_within_a_shard() {
        let mut shard = shard();
        let a = shard.next_auth_id();
        let b = shard.next_auth_id();
        assert_ne!(a, b);
        assert!(
            a.iter()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        );
        // A bijection on the counter: 2 million consecutive codes are all different, and the
        // sequence repeats only after AUTH_ID_SPACE approvals.
        let mut seen = std::collections::HashSet::new();
        for counter in 0..2_000_000 {
            assert!(seen.insert(auth_id(counter, 3)), "repeat at {counter}");
        }
        assert_eq!(auth_id(5, 3), auth_id(5 + AUTH_ID_SPACE, 3));
        assert_ne!(auth_id(5, 3), auth_id(5, 4), "shards are offset");
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
                let now = NOW + u64::try_from(i).unwrap();
                shard.apply(&request, now);
                shard.expire(now);
                prop_assert_eq!(shard.total(), total);
                for index in 0..5 {
                    let account = shard.account(&token(index)).unwrap();
                    prop_assert!(account.held >= 0);
                }
            }
        }

        /// Where a transaction is kept must change no decision: a shard with a hot window of
        /// a few transactions and the rest in a cold tier decides every request, expiry step
        /// and partial reversal exactly as a shard holding everything in memory, and ends in
        /// the same state.
        #[test]
        fn a_tiny_hot_window_decides_exactly_as_all_in_memory(
            steps in proptest::collection::vec((any_step(), 0u64..4_000), 1..300),
            hot_max in 1usize..6,
        ) {
            let limits = ShardLimits { hot_max, hold_expiry_seconds: 3_000, reversal_window_seconds: 1_500, ..LIMITS };
            let build = |cold: bool| {
                let mut shard = LedgerShard::from_image(0, limits, shard().image());
                shard.open_account(token(3), Account::new(50_000, 840));
                if cold { shard.with_cold(Box::<MemoryTier>::default()) } else { shard }
            };
            // And a third replays what the first answered, as recovery does.
            let (mut hot, mut split, mut replayed) = (build(false), build(true), build(true));
            let mut now = NOW;
            for (i, ((op, card, amount, stan), advance)) in steps.into_iter().enumerate() {
                let kinds = [Kind::Authorization, Kind::AuthorizationAdvice, Kind::Purchase, Kind::CashWithdrawal,
                    Kind::Refund, Kind::Deposit, Kind::BalanceInquiry, Kind::Completion, Kind::Reversal, Kind::ReversalAdvice];
                let kind = kinds[usize::from(op)];
                let own_stan = 1_000 + u32::try_from(i).unwrap();
                let mut request = if kind.refers_to_original() {
                    referring(kind, card, amount, own_stan, stan)
                } else {
                    request(kind, card, amount, stan)
                };
                if kind.is_reversal() && amount % 3 == 0 {
                    request.replacement = Some(amount / 2);
                }
                now += advance / 10;
                let outcome = hot.apply(&request, now);
                prop_assert_eq!(outcome, split.apply(&request, now), "step {}", i);
                let again = replayed.replay(&request, now, outcome.code.is_approved());
                prop_assert_eq!(outcome, again, "replay of step {}", i);
                let step = hot.expiry_step(now, 2, 2);
                let expired = hot.expire_step(&step);
                prop_assert_eq!(expired, split.expire_step(&step), "expiry at step {}", i);
                prop_assert_eq!(expired, replayed.expire_step(&step), "replayed expiry at step {}", i);
                prop_assert!(split.hot_count() <= hot_max + 1);
            }
            prop_assert!(hot.full_image().same_state(&split.full_image()));
            prop_assert!(hot.full_image().same_state(&replayed.full_image()));
            prop_assert_eq!(hot.transaction_count(), split.transaction_count());
        }
    }
}
