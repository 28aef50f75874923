//! Request identities seen recently, with the outcome each got (DESIGN §2.4).
//!
//! Shared by every session, because a retransmission may arrive on another connection and a
//! conflicting request under the same identity may name another card (so another shard): the
//! check has to happen before routing. A `DashMap` keeps the lock per map shard and short.
//!
//! Two generations bound it in time and count with O(1) eviction: new entries go into the
//! current generation, lookups check both, and [`IdempotencyStore::sweep`] drops the older
//! generation and starts a new one every `retention` seconds, so an entry lives between one and
//! two retentions. When the current generation fills to three quarters of its share before
//! that, the sweep rotates early and reports how short the window became: under a load the
//! limit was not sized for, the duplicate window shrinks instead of the switch refusing
//! traffic. Only if a generation fills completely between two sweeps do new requests get 96.
//!
//! An identical retransmission that arrives while its original is still being decided, on any
//! connection, waits for that decision: [`Begin::InFlight`] hands it a receiver that
//! [`IdempotencyStore::finish`] (or [`IdempotencyStore::abandon`]) fills with the original's
//! outcome. At most `waiters_max` wait per identity; the session bounds the wait in time.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry as MapEntry;
use tokio::sync::oneshot;

use crate::domain::hash::TableHasher;
use crate::domain::{Outcome, RequestIdentity};
use crate::limits::WAITERS_PER_IDENTITY_DEFAULT;

#[derive(Debug)]
struct Entry {
    fingerprint: u64,
    /// `None` while the request is still in the pipeline.
    outcome: Option<Outcome>,
    /// Identical retransmissions waiting for the outcome; `None` nearly always. Boxed so that
    /// every entry pays one pointer for it, not a vector's three (16 M entries by default).
    #[allow(clippy::box_collection)]
    waiters: Option<Box<Vec<oneshot::Sender<Outcome>>>>,
}

impl Entry {
    fn answered(fingerprint: u64, outcome: Outcome) -> Entry {
        Entry {
            fingerprint,
            outcome: Some(outcome),
            waiters: None,
        }
    }

    /// Hands the outcome to everything waiting for it.
    fn wake(&mut self, outcome: Outcome) {
        for waiter in self.waiters.take().into_iter().flat_map(|w| *w) {
            // A waiter that gave up (timed out, connection gone) has dropped its receiver.
            let _ = waiter.send(outcome);
        }
    }
}

#[derive(Debug)]
pub enum Begin {
    /// First sight: process it, then call [`IdempotencyStore::finish`] or
    /// [`IdempotencyStore::abandon`].
    New,
    /// An identical request was answered: send this outcome again, change nothing.
    Replay(Outcome),
    /// Another request under the same identity: answer 94.
    Conflict,
    /// An identical request is still being processed: its outcome arrives on this receiver
    /// (an error if the table forgot the identity before it was decided).
    InFlight(oneshot::Receiver<Outcome>),
    /// An identical request is still being processed and `waiters_max` retransmissions already
    /// wait for it: answer 91 (try again later).
    TooManyWaiting,
    /// The current generation is full: answer 96 and remember nothing.
    Full,
}

/// The maps' hasher: identities are the acquirers' choice (see [`TableHasher`]); SipHash, the
/// default, hashed each identity two or three times per request.
type IdentityHasher = TableHasher;

#[derive(Debug, Default)]
struct Generation {
    entries: DashMap<RequestIdentity, Entry, IdentityHasher>,
    count: AtomicUsize,
}

/// What a sweep did, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sweep {
    Nothing,
    /// The older generation was dropped on schedule.
    Rotated {
        dropped: usize,
    },
    /// Dropped early under load: retransmissions are now recognised for only `window_seconds`.
    RotatedEarly {
        dropped: usize,
        window_seconds: u64,
    },
}

/// Locks of each generation's map. A sweep drops a whole generation one lock at a time, and
/// every lookup that meets the lock being swept waits for it: with dashmap's default (four per
/// core) a lock covered a million entries of a full 16 M table, and sweeping it held up the
/// acquirers for 0.2–1.3 s (the 10-minute soak, bench/RESULTS.md). With 1,024, a lock covers
/// thousands.
const MAP_SHARDS: usize = 1024;
const _: () = assert!(MAP_SHARDS.is_power_of_two() && MAP_SHARDS > 1);

#[derive(Debug)]
pub struct IdempotencyStore {
    generations: [Generation; 2],
    /// Index of the generation new entries go into.
    current: AtomicUsize,
    /// When the current generation started.
    current_since_seconds: AtomicU64,
    generation_max: usize,
    retention_seconds: u64,
    waiters_max: usize,
}

fn classify(entry: &mut Entry, fingerprint: u64, waiters_max: usize) -> Begin {
    match (entry.fingerprint == fingerprint, entry.outcome) {
        (false, _) => Begin::Conflict,
        (true, Some(outcome)) => Begin::Replay(outcome),
        (true, None)
            if entry
                .waiters
                .as_ref()
                .is_some_and(|w| w.len() >= waiters_max) =>
        {
            Begin::TooManyWaiting
        }
        (true, None) => {
            let (sender, receiver) = oneshot::channel();
            entry.waiters.get_or_insert_default().push(sender);
            Begin::InFlight(receiver)
        }
    }
}

impl IdempotencyStore {
    pub fn new(entries_max: usize, retention_seconds: u64) -> IdempotencyStore {
        IdempotencyStore::starting_at(entries_max, retention_seconds, 0)
    }

    pub fn starting_at(
        entries_max: usize,
        retention_seconds: u64,
        now_seconds: u64,
    ) -> IdempotencyStore {
        let generation_max = (entries_max / 2).max(1);
        // Sized once for what the configuration allows: a map of millions growing by doubling
        // holds its lock for tens of milliseconds, and every session waits. Only the control
        // bytes are written now; the slots take memory as they fill.
        let generation = || Generation {
            entries: DashMap::with_capacity_and_hasher_and_shard_amount(
                generation_max,
                IdentityHasher::default(),
                MAP_SHARDS,
            ),
            count: AtomicUsize::new(0),
        };
        IdempotencyStore {
            generations: [generation(), generation()],
            current: AtomicUsize::new(0),
            current_since_seconds: AtomicU64::new(now_seconds),
            generation_max,
            retention_seconds,
            waiters_max: WAITERS_PER_IDENTITY_DEFAULT,
        }
    }

    /// Sets how many identical retransmissions may wait for one undecided request.
    pub fn with_waiters_max(mut self, waiters_max: usize) -> IdempotencyStore {
        self.waiters_max = waiters_max;
        self
    }

    fn current(&self) -> (&Generation, &Generation) {
        let current = self.current.load(Ordering::Acquire) & 1;
        (&self.generations[current], &self.generations[current ^ 1])
    }

    pub fn begin(&self, identity: RequestIdentity, fingerprint: u64) -> Begin {
        let (current, previous) = self.current();
        if let Some(mut entry) = previous.entries.get_mut(&identity) {
            return classify(&mut entry, fingerprint, self.waiters_max);
        }
        match current.entries.entry(identity) {
            MapEntry::Occupied(mut entry) => {
                classify(entry.get_mut(), fingerprint, self.waiters_max)
            }
            MapEntry::Vacant(entry) => {
                if current.count.load(Ordering::Relaxed) >= self.generation_max {
                    return Begin::Full;
                }
                current.count.fetch_add(1, Ordering::Relaxed);
                entry.insert(Entry {
                    fingerprint,
                    outcome: None,
                    waiters: None,
                });
                Begin::New
            }
        }
    }

    /// Records the outcome that was sent, for retransmissions, and hands it to those waiting.
    pub fn finish(&self, identity: &RequestIdentity, outcome: Outcome) {
        for generation in &self.generations {
            if let Some(mut entry) = generation.entries.get_mut(identity) {
                entry.outcome = Some(outcome);
                entry.wake(outcome);
                return;
            }
        }
    }

    /// Forgets a request that was shed before any decision (`outcome`, a 91 or 96), so that a
    /// later retransmission is tried anew; those already waiting get the same `outcome`.
    pub fn abandon(&self, identity: &RequestIdentity, outcome: Outcome) {
        for generation in &self.generations {
            if let Some((_, mut entry)) = generation.entries.remove(identity) {
                // Saturating: a sweep may have reset the count while this entry was removed.
                let _ = generation
                    .count
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                        Some(n.saturating_sub(1))
                    });
                entry.wake(outcome);
                return;
            }
        }
    }

    /// Puts back an answered request found in the log at start-up (read oldest first). When
    /// the current generation is as full as makes the live table rotate early (three
    /// quarters), the older one is dropped and a new current one started, as the live table
    /// does: what stays is the newest answers, the ones retransmissions ask for, and the first
    /// sweep after the start finds nothing to rotate. (Stopping at a full generation kept the
    /// oldest instead: after the 10-minute soak, nothing of the last 10 M requests before a
    /// restart.) An identity logged twice (retransmitted after its entry was dropped) keeps
    /// its newest answer only, as live.
    pub fn restore(&self, identity: RequestIdentity, fingerprint: u64, outcome: Outcome) {
        let (mut current, mut previous) = self.current();
        // Rotated before it would reach three quarters, so that it ends below.
        let early = (self.generation_max / 4 * 3).max(1);
        if current.count.load(Ordering::Relaxed) + 1 >= early {
            let next = (self.current.load(Ordering::Acquire) & 1) ^ 1;
            // Clearing keeps the table's memory, already touched: no page faults refilling it.
            previous.entries.clear();
            previous.count.store(0, Ordering::Relaxed);
            self.current.store(next, Ordering::Release);
            (current, previous) = (previous, current);
        }
        if previous.count.load(Ordering::Relaxed) > 0
            && previous.entries.remove(&identity).is_some()
        {
            previous.count.fetch_sub(1, Ordering::Relaxed);
        }
        if current
            .entries
            .insert(identity, Entry::answered(fingerprint, outcome))
            .is_none()
        {
            current.count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drops the older generation when the current one has lived `retention` seconds, or
    /// earlier when it is three quarters full. Call about once a second.
    pub fn sweep(&self, now_seconds: u64) -> Sweep {
        let (current, _) = self.current();
        let age = now_seconds.saturating_sub(self.current_since_seconds.load(Ordering::Acquire));
        let pressed = current.count.load(Ordering::Relaxed) >= self.generation_max / 4 * 3;
        if age < self.retention_seconds && !pressed {
            return Sweep::Nothing;
        }
        let next = (self.current.load(Ordering::Acquire) & 1) ^ 1;
        let older = &self.generations[next];
        // A request still undecided after a whole retention keeps its entry one more round, so
        // that its decision is recorded and its waiting retransmissions get it.
        older.entries.retain(|_, entry| entry.outcome.is_none());
        let kept = older.entries.len();
        let dropped = older
            .count
            .swap(kept, Ordering::Relaxed)
            .saturating_sub(kept);
        self.current.store(next, Ordering::Release);
        self.current_since_seconds
            .store(now_seconds, Ordering::Release);
        if age < self.retention_seconds {
            Sweep::RotatedEarly {
                dropped,
                window_seconds: age,
            }
        } else {
            Sweep::Rotated { dropped }
        }
    }

    pub fn len(&self) -> usize {
        self.generations
            .iter()
            .map(|g| g.count.load(Ordering::Relaxed))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ResponseCode;

    fn id(stan: u32) -> RequestIdentity {
        RequestIdentity {
            acquirer: 123_456,
            terminal: *b"TERM0001",
            stan,
            transmission: 1_126_143_015,
        }
    }

    /// What [`IdempotencyStore::begin`] said, comparable.
    #[derive(Debug, PartialEq)]
    enum Seen {
        New,
        Replay(Outcome),
        Conflict,
        InFlight,
        TooManyWaiting,
        Full,
    }

    fn begin(store: &IdempotencyStore, identity: RequestIdentity, fingerprint: u64) -> Seen {
        match store.begin(identity, fingerprint) {
            Begin::New => Seen::New,
            Begin::Replay(outcome) => Seen::Replay(outcome),
            Begin::Conflict => Seen::Conflict,
            Begin::InFlight(_) => Seen::InFlight,
            Begin::TooManyWaiting => Seen::TooManyWaiting,
            Begin::Full => Seen::Full,
        }
    }

    const APPROVED: Outcome = Outcome {
        code: ResponseCode::Approved,
        auth_id: Some(*b"000001"),
        balances: None,
    };

    #[test]
    fn an_entry_stays_small() {
        // 16 M of them by default: the waiters must not widen the common entry.
        assert!(
            std::mem::size_of::<Entry>() <= 56,
            "{}",
            std::mem::size_of::<Entry>()
        );
    }

    #[test]
    fn lifecycle() {
        let store = IdempotencyStore::new(4, 10);
        assert_eq!(begin(&store, id(1), 7), Seen::New);
        assert_eq!(begin(&store, id(1), 7), Seen::InFlight);
        assert_eq!(begin(&store, id(1), 8), Seen::Conflict);
        store.finish(&id(1), APPROVED);
        assert_eq!(begin(&store, id(1), 7), Seen::Replay(APPROVED));
        assert_eq!(begin(&store, id(1), 8), Seen::Conflict);
        assert_eq!(begin(&store, id(2), 7), Seen::New);
        assert_eq!(
            begin(&store, id(3), 7),
            Seen::Full,
            "a generation holds half the limit"
        );
        store.abandon(&id(2), Outcome::decline(ResponseCode::IssuerUnavailable));
        assert_eq!(store.len(), 1);
        assert_eq!(begin(&store, id(3), 7), Seen::New);
    }

    #[test]
    fn entries_live_one_to_two_retentions() {
        let store = IdempotencyStore::starting_at(1_000, 10, 0);
        assert_eq!(begin(&store, id(1), 7), Seen::New);
        store.finish(&id(1), APPROVED);
        assert_eq!(store.sweep(9), Sweep::Nothing);
        assert_eq!(store.sweep(10), Sweep::Rotated { dropped: 0 });
        assert_eq!(
            begin(&store, id(1), 7),
            Seen::Replay(APPROVED),
            "still found in the older generation"
        );
        store.finish(&id(1), APPROVED);
        assert_eq!(store.sweep(20), Sweep::Rotated { dropped: 1 });
        assert_eq!(
            begin(&store, id(1), 7),
            Seen::New,
            "gone after two retentions"
        );
    }

    #[test]
    fn pressure_rotates_early_instead_of_refusing() {
        let store = IdempotencyStore::starting_at(8, 100, 0);
        for stan in 0..3 {
            assert_eq!(begin(&store, id(stan), 1), Seen::New);
        }
        assert_eq!(
            store.sweep(5),
            Sweep::RotatedEarly {
                dropped: 0,
                window_seconds: 5
            }
        );
        for stan in 3..7 {
            assert_eq!(
                begin(&store, id(stan), 1),
                Seen::New,
                "room again after the early rotation"
            );
        }
        assert_eq!(
            begin(&store, id(0), 1),
            Seen::InFlight,
            "the older generation is still consulted"
        );
        assert_eq!(store.len(), 7);
    }

    #[test]
    fn retransmissions_in_flight_wait_for_the_original_outcome() {
        let store = IdempotencyStore::new(100, 10).with_waiters_max(2);
        assert_eq!(begin(&store, id(1), 7), Seen::New);
        let Begin::InFlight(mut first) = store.begin(id(1), 7) else {
            panic!("in flight")
        };
        let Begin::InFlight(mut second) = store.begin(id(1), 7) else {
            panic!("in flight")
        };
        assert_eq!(begin(&store, id(1), 7), Seen::TooManyWaiting);
        assert_eq!(begin(&store, id(1), 8), Seen::Conflict, "not a waiter");
        assert!(first.try_recv().is_err(), "nothing decided yet");
        store.finish(&id(1), APPROVED);
        assert_eq!(first.try_recv(), Ok(APPROVED));
        assert_eq!(second.try_recv(), Ok(APPROVED));
        assert_eq!(begin(&store, id(1), 7), Seen::Replay(APPROVED));

        // A request shed before its decision gives its waiters the same answer.
        let shed = Outcome::decline(ResponseCode::IssuerUnavailable);
        assert_eq!(begin(&store, id(2), 7), Seen::New);
        let Begin::InFlight(mut waiting) = store.begin(id(2), 7) else {
            panic!("in flight")
        };
        store.abandon(&id(2), shed);
        assert_eq!(waiting.try_recv(), Ok(shed));
        assert_eq!(begin(&store, id(2), 7), Seen::New, "tried anew");

        // Undecided through two rotations: still there to record its decision and wake its
        // waiter; decided entries go as before.
        let store = IdempotencyStore::starting_at(100, 10, 0);
        assert_eq!(begin(&store, id(3), 7), Seen::New);
        assert_eq!(begin(&store, id(4), 7), Seen::New);
        store.finish(&id(4), APPROVED);
        let Begin::InFlight(mut waiting) = store.begin(id(3), 7) else {
            panic!("in flight")
        };
        store.sweep(10);
        assert_eq!(store.sweep(20), Sweep::Rotated { dropped: 1 });
        store.finish(&id(3), APPROVED);
        assert_eq!(waiting.try_recv(), Ok(APPROVED));
        assert_eq!(begin(&store, id(3), 7), Seen::Replay(APPROVED));
        assert_eq!(
            begin(&store, id(4), 7),
            Seen::New,
            "decided and past two retentions"
        );
    }

    /// Restored oldest first, more than the table holds: the newest answers stay, and the
    /// oldest go; an identity logged twice keeps its newest answer.
    #[test]
    fn restore_keeps_the_newest_answers() {
        // Generations of eight, rotated at six: restore starts a new one at five.
        let store = IdempotencyStore::new(16, 10);
        for stan in 1..=13 {
            store.restore(id(stan), 3, APPROVED);
        }
        // {1..5} was dropped; {6..10} then {11, 12, 13} stay.
        assert_eq!(store.len(), 8);
        // Retransmitted after an early rotation, answered 94 the second time: one entry.
        let conflict = Outcome::decline(ResponseCode::DuplicateTransmission);
        store.restore(id(7), 3, conflict);
        assert_eq!(store.len(), 8);
        assert_eq!(begin(&store, id(7), 3), Seen::Replay(conflict));
        for stan in [6, 8, 9, 10, 11, 12, 13] {
            assert_eq!(begin(&store, id(stan), 3), Seen::Replay(APPROVED), "{stan}");
        }
        assert_eq!(begin(&store, id(13), 4), Seen::Conflict);
        // The first sweep finds the current generation below three quarters: nothing to do.
        assert_eq!(store.sweep(1), Sweep::Nothing);
        // The newest of those dropped is new again.
        assert_eq!(begin(&store, id(5), 3), Seen::New);
    }
}
