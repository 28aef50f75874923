//! Velocity counters: how many approvals (and how much money) one card, merchant or terminal
//! had within a sliding window, in a table of fixed size.
//!
//! **One table per kind of key** (card, merchant, terminal): a key's slot holds the ring of
//! every velocity rule counting that kind of key, so a request looks its card up once however
//! many card rules there are, and the second and later rules find the slot in cache. (One table
//! per rule cost a lookup that missed the cache and the TLB per rule: 1.5–2.2 µs for six
//! velocity rules over a million cards; bench/RESULTS.md.)
//!
//! **Memory is set by configuration, never by traffic**: each table has the slots configured for
//! its kind (`risk.velocity_keys_max`, `velocity_merchants_max`, `velocity_terminals_max`),
//! allocated at start (or at the reload that changes its rules). A set of 7 slots takes a
//! 64-byte line for its lock and the slots' tags and expiries, and then, per ring, 3 lines (the
//! slots' newest buckets and 8 counts each) or 11 for a rule that limits an amount (8 amounts
//! more): per slot, 9.1 bytes, plus 27.4 per rule, or 100.6 per rule with an amount limit
//! ([`VelocityTable::bytes`]; each ring line carries an unused lock word, 1/8 of it, so that
//! the set stays one array of cache lines with its lock in the first).
//! Slots are grouped in sets of 7, each set behind its own lock, so that two workers meet only
//! on the same set; a key lives in the set its hash picks, and a new key takes an empty slot of
//! that set, then one whose rings have all left their windows, then, when all seven keys are
//! live, the one whose counts expire first (an eviction, counted; size the table for the keys
//! active within the longest window).
//!
//! **A ring is 8 buckets** of 1/8 of its window each: an approval counts from its bucket until
//! that bucket leaves the window, so for at least 7/8 of the window and less than all of it
//! (a 60 s window remembers each approval for 52.5 to 60 s).
//!
//! **Counting approvals exactly**: a request that passes risk takes a [`Hold`] in each of its
//! velocity rules' rings. It counts at once, so that concurrent requests for one card
//! cannot all slip under the limit, and it is given back when the request is answered with
//! anything but an approval (`risk::Passed` does it when dropped); an approval keeps it. Requests
//! still in flight thus count as approvals until they are decided.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::domain::Minor;

/// Buckets per window.
pub const BUCKETS: usize = 8;
/// The most approvals a key's window can hold: each bucket counts in 16 bits (saturating).
pub const COUNT_MAX: u64 = 8 * u16::MAX as u64;
const BUCKETS_U32: u32 = 8;
const BUCKETS_U64: u64 = 8;
/// Slots per set (and per lock): 7, so that the lock and one word per slot (its tag and
/// expiry) fill exactly the set's first cache line, which a lookup reads before the slot.
const WAYS: usize = 7;
/// Words of a block beside its lock.
const BLOCK_WORDS: usize = 7;
/// Words of a ring: its newest bucket, then its 8 counts of 16 bits in two words.
const RING_WORDS: usize = 3;
/// Words of a ring's amounts, one per bucket.
const AMOUNT_WORDS: usize = BUCKETS;

/// The shortest window: a bucket of at least one second keeps bucket numbers in 32 bits for
/// centuries.
pub const WINDOW_SECONDS_MIN: u64 = BUCKETS_U64;
/// The longest window: 31 days.
pub const WINDOW_SECONDS_MAX: u64 = 31 * 86_400;

/// A cache line of a set: its lock (used in the set's first block only; it guards every word
/// of the set's blocks) and 7 words. The first block holds one word per slot, its tag (low 32
/// bits; 0: empty) and the second its counts all leave their windows (high 32 bits); the
/// blocks after it hold the slots' rings, slot after slot.
///
/// The words are atomics only so that the lock beside them can guard them in safe Rust: every
/// access is `Relaxed` under the lock, plain loads and stores on the machine.
#[derive(Debug, Default)]
#[repr(C, align(64))]
struct Block {
    lock: Mutex<()>,
    words: [AtomicU64; BLOCK_WORDS],
}

const _: () = assert!(
    std::mem::size_of::<Block>() == 64,
    "a block is one cache line"
);

/// One velocity rule's ring in its key kind's table: what the table must know of the rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ring {
    pub window_seconds: u64,
    /// The rule limits an amount: the ring keeps the amount of each bucket too.
    pub amounts: bool,
}

impl Ring {
    fn words(self) -> usize {
        RING_WORDS + if self.amounts { AMOUNT_WORDS } else { 0 }
    }
}

/// A ring's place in a slot and its bucket length.
#[derive(Clone, Copy, Debug)]
struct RingAt {
    ring: Ring,
    /// Words from the start of the slot.
    offset: usize,
    bucket_ms: u64,
}

/// The counters of every velocity rule on one kind of key.
#[derive(Debug)]
pub struct VelocityTable {
    blocks: Box<[Block]>,
    sets: usize,
    blocks_per_set: usize,
    slot_words: usize,
    rings: Box<[RingAt]>,
    evictions: AtomicU64,
}

/// What a key had in the window before this request, when the request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exceeded {
    pub count: u64,
    pub amount: Minor,
}

/// What a request may add to a key's window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    pub count_max: Option<u64>,
    pub amount_max: Option<Minor>,
}

/// The guard of one set, with where its words are.
struct SetGuard<'a> {
    table: &'a VelocityTable,
    /// The set's first block.
    first: usize,
    _lock: MutexGuard<'a, ()>,
}

impl SetGuard<'_> {
    fn way_word(&self, way: usize) -> &AtomicU64 {
        &self.table.blocks[self.first].words[way]
    }

    fn tag(&self, way: usize) -> u32 {
        low(self.way_word(way).load(Ordering::Relaxed))
    }

    fn expires(&self, way: usize) -> u32 {
        high(self.way_word(way).load(Ordering::Relaxed))
    }

    fn set_way(&self, way: usize, tag: u32, expires: u32) {
        self.way_word(way).store(
            u64::from(tag) | (u64::from(expires) << 32),
            Ordering::Relaxed,
        );
    }

    fn way_of(&self, tag: u32) -> Option<usize> {
        (0..WAYS).find(|&way| self.tag(way) == tag)
    }

    /// The words of ring `at` of slot `way`, in order.
    fn words(&self, way: usize, at: &RingAt) -> impl Iterator<Item = &AtomicU64> {
        let start = way * self.table.slot_words + at.offset;
        let mut block = self.first + 1 + start / BLOCK_WORDS;
        let mut index = start % BLOCK_WORDS;
        let blocks = &self.table.blocks;
        (0..at.ring.words()).filter_map(move |_| {
            let word = blocks.get(block).map(|b| &b.words[index]);
            index += 1;
            if index == BLOCK_WORDS {
                index = 0;
                block += 1;
            }
            word
        })
    }

    fn load(&self, way: usize, at: &RingAt) -> RingState {
        let mut raw = [0u64; RING_WORDS + AMOUNT_WORDS];
        for (value, word) in raw.iter_mut().zip(self.words(way, at)) {
            *value = word.load(Ordering::Relaxed);
        }
        let mut state = RingState {
            newest: low(raw[0]),
            ..RingState::default()
        };
        for (i, count) in state.counts.iter_mut().enumerate() {
            let word = raw[1 + i / 4];
            *count = u16::try_from((word >> (16 * (i % 4))) & 0xffff).unwrap_or(u16::MAX);
        }
        state.amounts.copy_from_slice(&raw[RING_WORDS..]);
        state
    }

    fn store(&self, way: usize, at: &RingAt, state: &RingState) {
        let mut raw = [0u64; RING_WORDS + AMOUNT_WORDS];
        raw[0] = u64::from(state.newest);
        for (i, count) in state.counts.iter().enumerate() {
            raw[1 + i / 4] |= u64::from(*count) << (16 * (i % 4));
        }
        raw[RING_WORDS..].copy_from_slice(&state.amounts);
        for (value, word) in raw.iter().zip(self.words(way, at)) {
            word.store(*value, Ordering::Relaxed);
        }
    }
}

/// A ring as read from its words: its newest bucket, and per bucket the approvals and (for a
/// ring that keeps them; 0 otherwise) the amount.
#[derive(Clone, Copy, Debug, Default)]
struct RingState {
    newest: u32,
    counts: [u16; BUCKETS],
    amounts: [Minor; BUCKETS],
}

impl RingState {
    fn empty(newest: u32) -> RingState {
        RingState {
            newest,
            ..RingState::default()
        }
    }
}

impl VelocityTable {
    /// A table of at least `keys_max` slots (rounded up to whole sets), each with `rings` (their
    /// windows checked by the configuration); an error, not an abort, when the memory cannot be
    /// had (a reload must leave the running switch as it was).
    pub fn new(
        keys_max: usize,
        rings: &[Ring],
    ) -> Result<VelocityTable, std::collections::TryReserveError> {
        let mut offset = 0;
        let rings: Box<[RingAt]> = rings
            .iter()
            .map(|&ring| {
                let at = RingAt {
                    ring,
                    offset,
                    bucket_ms: ring
                        .window_seconds
                        .clamp(WINDOW_SECONDS_MIN, WINDOW_SECONDS_MAX)
                        * 1000
                        / BUCKETS_U64,
                };
                offset += ring.words();
                at
            })
            .collect();
        let slot_words = offset;
        let sets = sets(keys_max);
        let blocks_per_set = blocks_per_set(slot_words);
        let mut blocks = Vec::new();
        blocks.try_reserve_exact(sets.saturating_mul(blocks_per_set))?;
        blocks.resize_with(sets * blocks_per_set, Block::default);
        Ok(VelocityTable {
            blocks: blocks.into_boxed_slice(),
            sets,
            blocks_per_set,
            slot_words,
            rings,
            evictions: AtomicU64::new(0),
        })
    }

    /// The bytes a table of `keys_max` slots with `rings` takes.
    pub fn bytes(keys_max: usize, rings: &[Ring]) -> u64 {
        let slot_words = rings.iter().map(|r| r.words()).sum();
        (sets(keys_max) as u64)
            .saturating_mul(blocks_per_set(slot_words) as u64)
            .saturating_mul(std::mem::size_of::<Block>() as u64)
    }

    pub fn slots(&self) -> usize {
        self.sets * WAYS
    }

    /// The slots of a table made for `keys_max`.
    pub fn slots_for(keys_max: usize) -> usize {
        sets(keys_max) * WAYS
    }

    /// The rings of every slot, in order.
    pub fn rings(&self) -> impl Iterator<Item = Ring> + '_ {
        self.rings.iter().map(|at| at.ring)
    }

    /// Live keys evicted to make room for a new one since the start.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    fn lock(&self, set: usize) -> SetGuard<'_> {
        let first = set * self.blocks_per_set;
        SetGuard {
            table: self,
            first,
            _lock: self.blocks[first]
                .lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        }
    }

    /// Reads the first line of `key`'s set without the lock: a hint that lets the cache
    /// misses of several tables overlap, where each lookup under its lock would wait for its
    /// own. (Reading the slot's lines as well, at the slot the key would take first, measured
    /// no better.) Returns what it read, for `black_box` to keep the read.
    pub fn warm(&self, key: u64) -> u64 {
        self.blocks
            .get(set_of(key, self.sets) * self.blocks_per_set)
            .map_or(0, |head| head.words[0].load(Ordering::Relaxed))
    }

    /// Adds one approval of `amount` for `key` to ring `ring` at `now_ms`, if the window then
    /// stays within `limit`; `Err` with what the window held otherwise (and nothing added).
    /// With `always`, it is added either way and `exceeded` tells whether the limit was passed.
    pub fn add(
        &self,
        key: u64,
        ring: usize,
        amount: Minor,
        now_ms: u64,
        limit: Limit,
        always: bool,
    ) -> (Option<Hold>, Option<Exceeded>) {
        let Some(at) = self.rings.get(ring) else {
            return (None, None); // no such ring: the engine built the table with its rules
        };
        let set_index = set_of(key, self.sets);
        let tag = tag_of(key);
        let now = bucket(now_ms, at.bucket_ms);
        let set = self.lock(set_index);
        let way = self.way_for(&set, tag, now_ms);
        let mut ring_state = set.load(way, at);
        // Advance the ring to `now`, clearing the buckets that left the window. A clock that
        // went back (or a request stamped a moment earlier on another worker) counts in the
        // newest bucket.
        let ahead = now.wrapping_sub(ring_state.newest);
        if ahead < u32::MAX / 2 {
            for step in 0..ahead.min(BUCKETS_U32) {
                let bucket = index(now.wrapping_sub(step));
                ring_state.counts[bucket] = 0;
                ring_state.amounts[bucket] = 0;
            }
            ring_state.newest = now;
        }
        let newest = ring_state.newest;
        let count: u64 = ring_state.counts.iter().map(|c| u64::from(*c)).sum();
        let held: Minor = ring_state
            .amounts
            .iter()
            .fold(0, |sum: Minor, a| sum.saturating_add(*a));
        let over = limit.count_max.is_some_and(|max| count + 1 > max)
            || limit
                .amount_max
                .is_some_and(|max| held.saturating_add(amount) > max);
        let exceeded = over.then_some(Exceeded {
            count,
            amount: held,
        });
        let added = !over || always;
        let bucket_at = index(newest);
        if added {
            ring_state.counts[bucket_at] = ring_state.counts[bucket_at].saturating_add(1);
            if at.ring.amounts {
                ring_state.amounts[bucket_at] =
                    ring_state.amounts[bucket_at].saturating_add(amount);
            }
        }
        set.store(way, at, &ring_state);
        set.set_way(way, tag, set.expires(way).max(expiry(newest, at.bucket_ms)));
        let hold = added.then_some(Hold {
            set: set_index,
            tag,
            ring,
            bucket: newest,
            amount,
        });
        (hold, exceeded)
    }

    /// The slot of `tag` in `set`, claiming one for it if it has none.
    fn way_for(&self, set: &SetGuard<'_>, tag: u32, now_ms: u64) -> usize {
        if let Some(way) = set.way_of(tag) {
            return way;
        }
        let now_s = seconds(now_ms);
        // A slot is idle once every ring's newest bucket has left its window. A clock behind
        // (another worker read it a moment earlier, or it stepped back) sees live slots live.
        let way = match (0..WAYS).find(|&w| set.tag(w) == 0 || now_s >= set.expires(w)) {
            Some(way) => way,
            None => {
                self.evictions.fetch_add(1, Ordering::Relaxed);
                // The one whose counts expire first.
                (0..WAYS).min_by_key(|&w| set.expires(w)).unwrap_or(0)
            }
        };
        set.set_way(way, tag, 0);
        for at in self.rings.iter() {
            set.store(way, at, &RingState::empty(bucket(now_ms, at.bucket_ms)));
        }
        way
    }

    /// What `key` holds in ring `ring` at `now_ms`: (approvals, amount).
    pub fn held(&self, key: u64, ring: usize, now_ms: u64) -> (u64, Minor) {
        let Some(at) = self.rings.get(ring) else {
            return (0, 0);
        };
        let set = self.lock(set_of(key, self.sets));
        let Some(way) = set.way_of(tag_of(key)) else {
            return (0, 0);
        };
        let ring_state = set.load(way, at);
        let newest = ring_state.newest;
        // A clock behind the ring's newest bucket reads as that bucket, as `add` counts it.
        let now = bucket(now_ms, at.bucket_ms);
        let now = if age(now, newest) == 0 { newest } else { now };
        let mut count = 0;
        let mut amount: Minor = 0;
        for age in 0..BUCKETS_U32 {
            let bucket = newest.wrapping_sub(age);
            if now.wrapping_sub(bucket) < BUCKETS_U32 {
                let at_bucket = index(bucket);
                count += u64::from(ring_state.counts[at_bucket]);
                amount = amount.saturating_add(ring_state.amounts[at_bucket]);
            }
        }
        (count, amount)
    }

    /// Gives back an approval counted in advance (the request was not approved).
    pub fn release(&self, hold: &Hold) {
        let Hold {
            set: set_index,
            tag,
            ring,
            bucket,
            amount,
        } = *hold;
        let (Some(at), true) = (self.rings.get(ring), set_index < self.sets) else {
            return;
        };
        let set = self.lock(set_index);
        let Some(way) = set.way_of(tag) else {
            return; // evicted meanwhile: nothing left to give back
        };
        let mut ring_state = set.load(way, at);
        if ring_state.newest.wrapping_sub(bucket) >= BUCKETS_U32 {
            return; // its bucket has left the window already
        }
        let at_bucket = index(bucket);
        ring_state.counts[at_bucket] = ring_state.counts[at_bucket].saturating_sub(1);
        ring_state.amounts[at_bucket] = ring_state.amounts[at_bucket].saturating_sub(amount);
        set.store(way, at, &ring_state);
    }

    /// Takes over the counts of `old`'s rings for the rings of this (new, not yet shared)
    /// table that `pairs` names, as `(old ring, new ring)`: a reload that adds or removes a
    /// rule keeps what the unchanged rules counted. Only between tables of as many sets (a key's
    /// set depends on their number); `false` otherwise, and nothing is copied. Each old set is
    /// copied under its lock; an approval counted in a set after it was copied and before the
    /// new table is in use is not carried over.
    pub fn adopt(&self, old: &VelocityTable, pairs: &[(usize, usize)], now_ms: u64) -> bool {
        if old.sets != self.sets {
            return false;
        }
        for set_index in 0..self.sets {
            let from = old.lock(set_index);
            let to = self.lock(set_index);
            for way in 0..WAYS {
                let tag = from.tag(way);
                if tag == 0 {
                    continue;
                }
                to.set_way(way, tag, from.expires(way));
                for at in self.rings.iter() {
                    to.store(way, at, &RingState::empty(bucket(now_ms, at.bucket_ms)));
                }
                for &(old_ring, new_ring) in pairs {
                    let (Some(old_at), Some(new_at)) =
                        (old.rings.get(old_ring), self.rings.get(new_ring))
                    else {
                        continue;
                    };
                    if old_at.ring != new_at.ring {
                        continue;
                    }
                    to.store(way, new_at, &from.load(way, old_at));
                }
            }
        }
        true
    }
}

/// Sets of a table of `keys_max` slots.
fn sets(keys_max: usize) -> usize {
    keys_max.div_ceil(WAYS).max(1)
}

/// Blocks of a set whose slots take `slot_words` words each: the head and the slots.
fn blocks_per_set(slot_words: usize) -> usize {
    1 + (WAYS * slot_words).div_ceil(BLOCK_WORDS)
}

/// The bucket number of `now_ms` for buckets of `bucket_ms`. Bucket numbers wrap after 2^32
/// buckets (136 years of one-second buckets); comparisons between them use wrapping
/// differences.
fn bucket(now_ms: u64, bucket_ms: u64) -> u32 {
    low(now_ms / bucket_ms.max(1))
}

/// The second (since 1970, in 32 bits: until 2106) at which bucket `newest` leaves its window.
fn expiry(newest: u32, bucket_ms: u64) -> u32 {
    seconds((u64::from(newest) + BUCKETS_U64).saturating_mul(bucket_ms) + 999)
}

fn seconds(ms: u64) -> u32 {
    u32::try_from(ms / 1000).unwrap_or(u32::MAX)
}

fn low(word: u64) -> u32 {
    u32::try_from(word & u64::from(u32::MAX)).unwrap_or(0)
}

fn high(word: u64) -> u32 {
    u32::try_from(word >> 32).unwrap_or(0)
}

/// The set of a key: the high bits of its hash (the tag takes the low ones).
fn set_of(key: u64, sets: usize) -> usize {
    // Below `sets`, so it fits.
    usize::try_from((u128::from(key) * sets as u128) >> 64).unwrap_or(0)
}

/// The tag of a key: its low 32 bits (0 marks an empty slot, so 1 stands for it).
fn tag_of(key: u64) -> u32 {
    low(key).max(1)
}

/// How many buckets `newest` lies behind `now`: 0 when it lies ahead (the clock stepped back,
/// or another worker read it a moment later and took the lock first).
fn age(now: u32, newest: u32) -> u32 {
    let behind = now.wrapping_sub(newest);
    if behind > u32::MAX / 2 { 0 } else { behind }
}

/// Where a bucket number's counts are in the ring.
fn index(bucket: u32) -> usize {
    usize::try_from(bucket % BUCKETS_U32).unwrap_or(0)
}

/// A 64-bit hash of a velocity key (a merchant or a terminal: ids a peer chooses), keyed at
/// random per process, so that nobody can pick ids that fall into one set and evict the
/// counts of others there. (Card keys are already keyed hashes: the tokens.)
pub fn key_hash(key: impl Hash) -> u64 {
    static KEYS: std::sync::LazyLock<std::hash::RandomState> =
        std::sync::LazyLock::new(std::hash::RandomState::new);
    KEYS.hash_one(key)
}

/// One approval counted in advance in a table: where, so that [`VelocityTable::release`] can
/// give it back. Kept by forgetting it (the holder, `risk::Passed`, releases on drop).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hold {
    set: usize,
    tag: u32,
    ring: usize,
    bucket: u32,
    amount: Minor,
}

#[cfg(test)]
mod tests {
    use super::*;

    const COUNT_3: Limit = Limit {
        count_max: Some(3),
        amount_max: None,
    };

    fn table(keys_max: usize, rings: &[(u64, bool)]) -> VelocityTable {
        let rings: Vec<Ring> = rings
            .iter()
            .map(|&(window_seconds, amounts)| Ring {
                window_seconds,
                amounts,
            })
            .collect();
        VelocityTable::new(keys_max, &rings).unwrap()
    }

    fn add(table: &VelocityTable, key: u64, now_ms: u64) -> bool {
        add_to(table, key, 0, now_ms)
    }

    fn add_to(table: &VelocityTable, key: u64, ring: usize, now_ms: u64) -> bool {
        let (_kept, exceeded) = table.add(key, ring, 100, now_ms, COUNT_3, false);
        exceeded.is_none()
    }

    #[test]
    fn counts_within_the_window_and_forgets_past_it() {
        // 80 s window: buckets of 10 s. An approval at t counts until its bucket is 8 back.
        let table = table(1024, &[(80, false)]);
        let t0 = 1_800_000_000_000; // a bucket boundary (divisible by 10,000 ms)
        assert!(add(&table, 7, t0));
        assert!(add(&table, 7, t0 + 1_000));
        assert!(add(&table, 7, t0 + 9_999));
        assert!(!add(&table, 7, t0 + 10_000), "the 4th within the window");
        assert!(add(&table, 8, t0 + 10_000), "another key has its own count");
        assert!(
            !add(&table, 7, t0 + 79_999),
            "the last moment of the window"
        );
        assert!(add(&table, 7, t0 + 80_000), "bucket 0 left the window");
        assert_eq!(table.held(7, 0, t0 + 80_000), (1, 0));
        // Days later the slot starts over.
        assert_eq!(table.held(7, 0, t0 + 3 * 86_400_000), (0, 0));
        assert!(add(&table, 7, t0 + 3 * 86_400_000));
        assert_eq!(table.held(7, 0, t0 + 3 * 86_400_000), (1, 0));
    }

    #[test]
    fn the_rings_of_one_slot_count_apart_each_in_its_own_window() {
        // Ring 0: 80 s, counts; ring 1: 8 s (1 s buckets), amounts; ring 2: 31 days, amounts.
        let table = table(64, &[(80, false), (8, true), (WINDOW_SECONDS_MAX, true)]);
        let t0 = 1_800_000_000_000;
        let limit = Limit {
            count_max: None,
            amount_max: Some(250),
        };
        for (ring, expect) in [(1, (1, 100)), (2, (1, 100))] {
            let (hold, exceeded) = table.add(9, ring, 100, t0, limit, false);
            assert!(hold.is_some());
            assert!(exceeded.is_none());
            assert_eq!(table.held(9, ring, t0), expect);
        }
        assert_eq!(table.held(9, 0, t0), (0, 0), "ring 0 untouched");
        assert!(add_to(&table, 9, 0, t0));
        assert_eq!(table.held(9, 0, t0), (1, 0), "a count ring keeps no amount");
        // 8 s later ring 1 forgot; ring 2 (31 days) and ring 0 (80 s) did not.
        let later = t0 + 8_000;
        assert_eq!(table.held(9, 1, later), (0, 0));
        assert_eq!(table.held(9, 2, later), (1, 100));
        assert_eq!(table.held(9, 0, later), (1, 0));
        let (hold, _) = table.add(9, 2, 150, later, limit, false);
        assert!(hold.is_some());
        let (none, exceeded) = table.add(9, 2, 1, later, limit, false);
        assert!(none.is_none());
        assert_eq!(
            exceeded,
            Some(Exceeded {
                count: 2,
                amount: 250
            })
        );
        // A week on, the 31-day ring still holds its key: the slot is not idle.
        let week = t0 + 7 * 86_400_000;
        assert_eq!(table.held(9, 2, week), (2, 250));
        assert_eq!(table.held(9, 0, week), (0, 0));
    }

    #[test]
    fn a_dropped_reservation_is_given_back_and_a_kept_one_stays() {
        let table = table(64, &[(60, true)]);
        let limit = Limit {
            count_max: None,
            amount_max: Some(1_000),
        };
        let now = 1_800_000_000_000;
        let (first, exceeded) = table.add(1, 0, 600, now, limit, false);
        assert!(exceeded.is_none());
        let (none, exceeded) = table.add(1, 0, 500, now, limit, false);
        assert!(none.is_none());
        assert_eq!(
            exceeded,
            Some(Exceeded {
                count: 1,
                amount: 600
            })
        );
        table.release(&first.unwrap()); // declined downstream
        assert_eq!(table.held(1, 0, now), (0, 0));
        let (second, _) = table.add(1, 0, 1_000, now, limit, false);
        assert!(second.is_some());
        assert_eq!(table.held(1, 0, now), (1, 1_000));
        let (always, exceeded) = table.add(1, 0, 1, now, limit, true);
        assert!(
            always.is_some() && exceeded.is_some(),
            "score rules count anyway"
        );
    }

    #[test]
    fn a_clock_behind_the_newest_bucket_neither_frees_nor_forgets_a_live_slot() {
        // One set; the window 60 s, buckets of 7.5 s.
        let table = table(7, &[(60, false)]);
        let now = 1_800_000_000_000;
        for key in 0..7u64 {
            assert!(add(&table, (key + 1) << 1, now));
        }
        // Another worker read the clock a moment earlier (the previous bucket), or the clock
        // stepped back: the seven live keys stay, the new key evicts one of them (counted)
        // rather than taking a live slot for an idle one.
        assert!(add(&table, 100, now - 7_500));
        assert_eq!(table.evictions(), 1);
        let alive = (0..7u64)
            .filter(|key| table.held((key + 1) << 1, 0, now) == (1, 0))
            .count();
        assert_eq!(alive, 6, "one evicted, none silently freed");
        // A key counted behind its newest bucket adds to that bucket.
        assert!(add(&table, 4, now - 7_500));
        assert_eq!(table.held(4, 0, now - 7_500), (2, 0));
        assert_eq!(table.held(4, 0, now), (2, 0));
    }

    #[test]
    fn a_full_set_evicts_the_key_whose_counts_expire_first() {
        let table = table(7, &[(60, false)]);
        assert_eq!(table.slots(), 7, "one set");
        let now = 1_800_000_000_000;
        for key in 0..7u64 {
            assert!(add(&table, key << 1, now + key * 7_500));
        }
        assert_eq!(table.evictions(), 0);
        let later = now + 7 * 7_500 - 1;
        assert!(add(&table, 100, later));
        assert_eq!(table.evictions(), 1);
        assert_eq!(table.held(0, 0, later), (0, 0), "the oldest went");
        assert_eq!(table.held(2, 0, later), (1, 0));
        // A key whose window has passed makes room without an eviction (expiry is kept in
        // whole seconds, rounded up: a slot comes free up to a second after its last bucket
        // left the window, never before).
        assert!(add(&table, 200, now + 9 * 7_500 + 1_000));
        assert_eq!(table.evictions(), 1);
    }

    #[test]
    fn a_new_table_adopts_the_counts_of_the_rings_it_keeps() {
        let now = 1_800_000_000_000;
        let old = table(700, &[(60, false), (3600, true)]);
        for key in 1..=300u64 {
            let key = key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            assert!(add_to(&old, key, 0, now));
            let (hold, _) = old.add(key, 1, 40, now, COUNT_3, false);
            assert!(hold.is_some());
        }
        // The 3600 s ring moves first, the 60 s ring goes, a 600 s ring is new.
        let new = table(700, &[(3600, true), (600, false)]);
        assert!(new.adopt(&old, &[(1, 0)], now + 1_000));
        for key in 1..=300u64 {
            let key = key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            assert_eq!(new.held(key, 0, now + 1_000), old.held(key, 1, now + 1_000));
            assert_eq!(new.held(key, 1, now + 1_000), (0, 0));
        }
        assert!(
            (1..=300u64).any(|k| new.held(k.wrapping_mul(0x9e37_79b9_7f4a_7c15), 0, now) != (0, 0))
        );
        let other = table(7_000, &[(3600, true)]);
        assert!(!other.adopt(&old, &[(1, 0)], now), "another number of sets");
    }

    #[test]
    fn memory_follows_the_rings() {
        let one = VelocityTable::bytes(
            7,
            &[Ring {
                window_seconds: 60,
                amounts: false,
            }],
        );
        // A set: its head line and 7 slots of 3 words in 3 more lines.
        assert_eq!(one, 4 * 64);
        let three = VelocityTable::bytes(
            7,
            &[
                Ring {
                    window_seconds: 60,
                    amounts: false,
                },
                Ring {
                    window_seconds: 60,
                    amounts: true,
                },
                Ring {
                    window_seconds: 60,
                    amounts: false,
                },
            ],
        );
        // 7 slots × 17 words = 119 words in 17 lines, and the head.
        assert_eq!(three, 18 * 64);
        assert_eq!(VelocityTable::bytes(7_000_000, &[]), 1_000_000 * 64);
    }
}
