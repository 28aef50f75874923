//! Velocity counters: how many approvals (and how much money) one card, merchant or terminal
//! had within a sliding window, in a table of fixed size.
//!
//! **Memory is set by configuration, never by traffic**: each velocity rule owns one table of
//! `risk.velocity_keys_max` slots, allocated at start (or at the reload that adds the rule).
//! A slot takes about 27 bytes (a 32-bit tag, the newest bucket, 8 counts, and its share of
//! the set's lock and cache-line alignment), plus 64 bytes of amounts when the rule limits an
//! amount. Slots are grouped in sets of 7, each set behind its own lock,
//! so that two workers meet only on the same set; a key lives in the set its hash picks, and a
//! new key takes an empty slot of that set, then one whose window has passed, then, when all
//! seven keys are live, the one least recently seen (an eviction, counted; size the table for
//! the keys active within one window).
//!
//! **The window is 8 buckets** of a 1/8 of it each: an approval counts from its bucket until
//! that bucket leaves the window, so for at least 7/8 of the window and less than all of it
//! (a 60 s window remembers each approval for 52.5 to 60 s).
//!
//! **Counting approvals exactly**: a request that passes risk takes a [`Reservation`] in each of
//! its velocity rules' tables. It counts at once, so that concurrent requests for one card
//! cannot all slip under the limit, and it is given back when the request is answered with
//! anything but an approval (dropping the reservation does it); an approval keeps it. Requests
//! still in flight thus count as approvals until they are decided.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::domain::Minor;

/// Buckets per window.
pub const BUCKETS: usize = 8;
/// The most approvals a key's window can hold: each bucket counts in 16 bits (saturating).
pub const COUNT_MAX: u64 = 8 * u16::MAX as u64;
const BUCKETS_U32: u32 = 8;
const BUCKETS_U64: u64 = 8;
/// Slots per set (and per lock): 7, so that the lock word, the tags and the newest buckets
/// fill exactly the set's first cache line (8 + 28 + 28 bytes), and a lookup touches that line
/// and the one holding its slot's counts.
const WAYS: usize = 7;

/// The shortest window: a bucket of at least one second keeps bucket numbers in 32 bits for
/// centuries.
pub const WINDOW_SECONDS_MIN: u64 = BUCKETS_U64;
/// The longest window: 31 days.
pub const WINDOW_SECONDS_MAX: u64 = 31 * 86_400;

/// The slots of one set, laid out for a lookup to touch few cache lines: (after the lock word)
/// the tags, then when each slot was last seen, then the counts.
#[derive(Debug)]
#[repr(C)]
struct Set {
    /// 0: empty. Otherwise the low 32 bits of the key's hash (1 for 0); the set is chosen by
    /// the high bits, so a slot stands for about 2^(32 + log2 sets) distinct hashes.
    tags: [u32; WAYS],
    /// Per slot, the bucket number of its newest bucket (`now / bucket`); the older ones
    /// precede it in the ring.
    newest: [u32; WAYS],
    counts: [[u16; BUCKETS]; WAYS],
    /// Per slot, per bucket: the amount approved, in minor units of `risk.currency`. Only for
    /// rules with an amount limit.
    amounts: Option<Box<[[Minor; BUCKETS]; WAYS]>>,
}

/// A set on cache-line boundaries of its own (its lock word and tags in its first line).
#[derive(Debug)]
#[repr(align(64))]
struct Line(Mutex<Set>);

/// One velocity rule's counters.
#[derive(Debug)]
pub struct VelocityTable {
    sets: Box<[Line]>,
    bucket_ms: u64,
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

impl VelocityTable {
    /// A table of at least `keys_max` slots (rounded up to whole sets) for a window of
    /// `window_seconds` (checked by the configuration); an error, not an abort, when the memory
    /// cannot be had (a reload must leave the running switch as it was).
    pub fn new(
        keys_max: usize,
        window_seconds: u64,
        amounts: bool,
    ) -> Result<VelocityTable, std::collections::TryReserveError> {
        let count = sets(keys_max);
        let mut lines = Vec::new();
        lines.try_reserve_exact(count)?;
        for _ in 0..count {
            let amounts = if amounts {
                let mut zeros = Vec::new();
                zeros.try_reserve_exact(WAYS)?;
                zeros.resize(WAYS, [0; BUCKETS]);
                // Exactly WAYS long, so the conversion cannot fail.
                <Box<[[Minor; BUCKETS]; WAYS]>>::try_from(zeros.into_boxed_slice()).ok()
            } else {
                None
            };
            lines.push(Line(Mutex::new(Set {
                tags: [0; WAYS],
                newest: [0; WAYS],
                counts: [[0; BUCKETS]; WAYS],
                amounts,
            })));
        }
        Ok(VelocityTable {
            sets: lines.into_boxed_slice(),
            bucket_ms: window_seconds.clamp(WINDOW_SECONDS_MIN, WINDOW_SECONDS_MAX) * 1000
                / BUCKETS_U64,
            evictions: AtomicU64::new(0),
        })
    }

    /// The bytes a table of `keys_max` slots takes.
    pub fn bytes(keys_max: usize, amounts: bool) -> u64 {
        let per_set = std::mem::size_of::<Line>()
            + if amounts {
                std::mem::size_of::<[[Minor; BUCKETS]; WAYS]>()
            } else {
                0
            };
        (sets(keys_max) as u64).saturating_mul(per_set as u64)
    }

    pub fn slots(&self) -> usize {
        self.sets.len() * WAYS
    }

    pub fn keeps_amounts(&self) -> bool {
        self.sets
            .first()
            .is_some_and(|set| lock(set).amounts.is_some())
    }

    /// Live keys evicted to make room for a new one since the start.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    fn bucket(&self, now_ms: u64) -> u32 {
        // Bucket numbers wrap after 2^32 buckets (136 years of one-second buckets); comparisons
        // between them use wrapping differences.
        u32::try_from((now_ms / self.bucket_ms) & u64::from(u32::MAX)).unwrap_or(0)
    }

    /// Adds one approval of `amount` for `key` at `now_ms`, if the window then stays within
    /// `limit`; `Err` with what the window held otherwise (and nothing added). With `always`,
    /// it is added either way and `exceeded` tells whether the limit was passed.
    pub fn add(
        self: &Arc<Self>,
        key: u64,
        amount: Minor,
        now_ms: u64,
        limit: Limit,
        always: bool,
    ) -> (Option<Reservation>, Option<Exceeded>) {
        let set_index = set_of(key, self.sets.len());
        let tag = tag_of(key);
        let now = self.bucket(now_ms);
        let mut set = lock(&self.sets[set_index]);
        let way = self.way_for(&mut set, tag, now);
        // Advance the ring to `now`, clearing the buckets that left the window. A clock that
        // went back (or a request stamped a moment earlier on another worker) counts in the
        // newest bucket.
        let ahead = now.wrapping_sub(set.newest[way]);
        let newest = if ahead < u32::MAX / 2 {
            let cleared = ahead.min(BUCKETS_U32);
            for step in 0..cleared {
                let bucket = index(now.wrapping_sub(step));
                set.counts[way][bucket] = 0;
                if let Some(amounts) = set.amounts.as_mut() {
                    amounts[way][bucket] = 0;
                }
            }
            set.newest[way] = now;
            now
        } else {
            set.newest[way]
        };
        let count: u64 = set.counts[way].iter().map(|c| u64::from(*c)).sum();
        let held: Minor = set.amounts.as_ref().map_or(0, |amounts| {
            amounts[way]
                .iter()
                .fold(0, |sum: Minor, a| sum.saturating_add(*a))
        });
        let over = limit.count_max.is_some_and(|max| count + 1 > max)
            || limit
                .amount_max
                .is_some_and(|max| held.saturating_add(amount) > max);
        let exceeded = over.then_some(Exceeded {
            count,
            amount: held,
        });
        if over && !always {
            return (None, exceeded);
        }
        let bucket = index(newest);
        set.counts[way][bucket] = set.counts[way][bucket].saturating_add(1);
        if let Some(amounts) = set.amounts.as_mut() {
            amounts[way][bucket] = amounts[way][bucket].saturating_add(amount);
        }
        (
            Some(Reservation {
                table: Some(self.clone()),
                set: set_index,
                tag,
                bucket: newest,
                amount,
            }),
            exceeded,
        )
    }

    /// The slot of `tag` in `set`, claiming one for it if it has none.
    fn way_for(&self, set: &mut Set, tag: u32, now: u32) -> usize {
        if let Some(way) = set.tags.iter().position(|t| *t == tag) {
            return way;
        }
        let idle = |w: &usize| set.tags[*w] == 0 || age(now, set.newest[*w]) >= BUCKETS_U32;
        let way = match (0..WAYS).find(idle) {
            Some(way) => way,
            None => {
                self.evictions.fetch_add(1, Ordering::Relaxed);
                // The least recently seen.
                (0..WAYS)
                    .max_by_key(|&w| age(now, set.newest[w]))
                    .unwrap_or(0)
            }
        };
        set.tags[way] = tag;
        set.newest[way] = now;
        set.counts[way] = [0; BUCKETS];
        if let Some(amounts) = set.amounts.as_mut() {
            amounts[way] = [0; BUCKETS];
        }
        way
    }

    /// What `key` holds in its window at `now_ms`: (approvals, amount).
    pub fn held(&self, key: u64, now_ms: u64) -> (u64, Minor) {
        let set = lock(&self.sets[set_of(key, self.sets.len())]);
        let tag = tag_of(key);
        let now = self.bucket(now_ms);
        let Some(way) = set.tags.iter().position(|t| *t == tag) else {
            return (0, 0);
        };
        // A clock behind the slot's newest bucket reads as that bucket, as `add` counts it.
        let now = if age(now, set.newest[way]) == 0 {
            set.newest[way]
        } else {
            now
        };
        let mut count = 0;
        let mut amount: Minor = 0;
        for age in 0..BUCKETS_U32 {
            let bucket = set.newest[way].wrapping_sub(age);
            if now.wrapping_sub(bucket) < BUCKETS_U32 {
                let at = index(bucket);
                count += u64::from(set.counts[way][at]);
                amount = amount.saturating_add(set.amounts.as_ref().map_or(0, |a| a[way][at]));
            }
        }
        (count, amount)
    }

    fn release(&self, set_index: usize, tag: u32, bucket: u32, amount: Minor) {
        let Some(set) = self.sets.get(set_index) else {
            return;
        };
        let mut set = lock(set);
        let Some(way) = set.tags.iter().position(|t| *t == tag) else {
            return; // evicted meanwhile: nothing left to give back
        };
        if set.newest[way].wrapping_sub(bucket) >= BUCKETS_U32 {
            return; // its bucket has left the window already
        }
        let at = index(bucket);
        set.counts[way][at] = set.counts[way][at].saturating_sub(1);
        if let Some(amounts) = set.amounts.as_mut() {
            amounts[way][at] = amounts[way][at].saturating_sub(amount);
        }
    }
}

fn lock(set: &Line) -> std::sync::MutexGuard<'_, Set> {
    set.0.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sets of a table of `keys_max` slots.
fn sets(keys_max: usize) -> usize {
    keys_max.div_ceil(WAYS).max(1)
}

/// The set of a key: the high bits of its hash (the tag takes the low ones).
fn set_of(key: u64, sets: usize) -> usize {
    // Below `sets`, so it fits.
    usize::try_from((u128::from(key) * sets as u128) >> 64).unwrap_or(0)
}

/// The tag of a key: its low 32 bits (0 marks an empty slot, so 1 stands for it).
fn tag_of(key: u64) -> u32 {
    u32::try_from(key & u64::from(u32::MAX)).unwrap_or(1).max(1)
}

/// How many buckets `newest` lies behind `now`: 0 when it lies ahead (the clock stepped back,
/// or another worker read it a moment later and took the lock first), so that a live slot is
/// never taken for an idle one.
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

/// One approval counted in advance; given back on drop unless [`Reservation::keep`] is called.
#[derive(Debug)]
pub struct Reservation {
    table: Option<Arc<VelocityTable>>,
    set: usize,
    tag: u32,
    bucket: u32,
    amount: Minor,
}

impl Reservation {
    /// The request was approved: the approval stays counted.
    pub fn keep(mut self) {
        self.table = None;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(table) = self.table.take() {
            table.release(self.set, self.tag, self.bucket, self.amount);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COUNT_3: Limit = Limit {
        count_max: Some(3),
        amount_max: None,
    };

    fn add(table: &Arc<VelocityTable>, key: u64, now_ms: u64) -> bool {
        let (reservation, exceeded) = table.add(key, 100, now_ms, COUNT_3, false);
        if let Some(r) = reservation {
            r.keep();
        }
        exceeded.is_none()
    }

    #[test]
    fn counts_within_the_window_and_forgets_past_it() {
        // 80 s window: buckets of 10 s. An approval at t counts until its bucket is 8 back.
        let table = Arc::new(VelocityTable::new(1024, 80, false).unwrap());
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
        assert_eq!(table.held(7, t0 + 80_000), (1, 0));
        // Days later the slot starts over.
        assert_eq!(table.held(7, t0 + 3 * 86_400_000), (0, 0));
        assert!(add(&table, 7, t0 + 3 * 86_400_000));
        assert_eq!(table.held(7, t0 + 3 * 86_400_000), (1, 0));
    }

    #[test]
    fn a_dropped_reservation_is_given_back_and_a_kept_one_stays() {
        let table = Arc::new(VelocityTable::new(64, 60, true).unwrap());
        let limit = Limit {
            count_max: None,
            amount_max: Some(1_000),
        };
        let now = 1_800_000_000_000;
        let (first, exceeded) = table.add(1, 600, now, limit, false);
        assert!(exceeded.is_none());
        let (none, exceeded) = table.add(1, 500, now, limit, false);
        assert!(none.is_none());
        assert_eq!(
            exceeded,
            Some(Exceeded {
                count: 1,
                amount: 600
            })
        );
        drop(first); // declined downstream
        assert_eq!(table.held(1, now), (0, 0));
        let (second, _) = table.add(1, 1_000, now, limit, false);
        second.unwrap().keep();
        assert_eq!(table.held(1, now), (1, 1_000));
        let (always, exceeded) = table.add(1, 1, now, limit, true);
        assert!(
            always.is_some() && exceeded.is_some(),
            "score rules count anyway"
        );
    }

    #[test]
    fn a_clock_behind_the_newest_bucket_neither_frees_nor_forgets_a_live_slot() {
        // One set; the window 60 s, buckets of 7.5 s.
        let table = Arc::new(VelocityTable::new(7, 60, false).unwrap());
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
            .filter(|key| table.held((key + 1) << 1, now) == (1, 0))
            .count();
        assert_eq!(alive, 6, "one evicted, none silently freed");
        // A key counted behind its newest bucket adds to that bucket.
        assert!(add(&table, 4, now - 7_500));
        assert_eq!(table.held(4, now - 7_500), (2, 0));
        assert_eq!(table.held(4, now), (2, 0));
    }

    #[test]
    fn a_full_set_evicts_the_least_recently_seen() {
        let table = Arc::new(VelocityTable::new(7, 60, false).unwrap());
        assert_eq!(table.slots(), 7, "one set");
        let now = 1_800_000_000_000;
        for key in 0..7u64 {
            assert!(add(&table, key << 1, now + key * 7_500));
        }
        assert_eq!(table.evictions(), 0);
        let later = now + 7 * 7_500 - 1;
        assert!(add(&table, 100, later));
        assert_eq!(table.evictions(), 1);
        assert_eq!(table.held(0, later), (0, 0), "the oldest went");
        assert_eq!(table.held(2, later), (1, 0));
        // A key whose window has passed makes room without an eviction.
        assert!(add(&table, 200, now + 9 * 7_500));
        assert_eq!(table.evictions(), 1);
    }
}
