//! Request identities seen recently, with the outcome each got (DESIGN §2.4).
//!
//! Shared by every session, because a retransmission may arrive on another connection and a
//! conflicting request under the same identity may name another card (so another shard): the
//! check has to happen before routing. A `DashMap` keeps the lock per map shard and short.
//! Bounded in count (new requests get 96 when full) and in time (entries older than the
//! retention are swept).

use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry as MapEntry;

use crate::domain::{Outcome, RequestIdentity};

#[derive(Clone, Copy, Debug)]
struct Entry {
    fingerprint: u64,
    /// `None` while the request is still in the pipeline.
    outcome: Option<Outcome>,
    seen_seconds: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Begin {
    /// First sight: process it, then call [`IdempotencyStore::finish`] or
    /// [`IdempotencyStore::abandon`].
    New,
    /// An identical request was answered: send this outcome again, change nothing.
    Replay(Outcome),
    /// Another request under the same identity: answer 94.
    Conflict,
    /// An identical request is still being processed; its answer will follow.
    InFlight,
    /// The store is at its limit: answer 96 and remember nothing.
    Full,
}

#[derive(Debug)]
pub struct IdempotencyStore {
    entries: DashMap<RequestIdentity, Entry>,
    count: AtomicUsize,
    entries_max: usize,
    retention_seconds: u64,
}

impl IdempotencyStore {
    pub fn new(entries_max: usize, retention_seconds: u64) -> IdempotencyStore {
        IdempotencyStore {
            entries: DashMap::new(),
            count: AtomicUsize::new(0),
            entries_max,
            retention_seconds,
        }
    }

    pub fn begin(&self, identity: RequestIdentity, fingerprint: u64, now_seconds: u64) -> Begin {
        match self.entries.entry(identity) {
            MapEntry::Occupied(entry) => {
                let seen = entry.get();
                match (seen.fingerprint == fingerprint, seen.outcome) {
                    (false, _) => Begin::Conflict,
                    (true, Some(outcome)) => Begin::Replay(outcome),
                    (true, None) => Begin::InFlight,
                }
            }
            MapEntry::Vacant(entry) => {
                if self.count.load(Ordering::Relaxed) >= self.entries_max {
                    return Begin::Full;
                }
                self.count.fetch_add(1, Ordering::Relaxed);
                entry.insert(Entry {
                    fingerprint,
                    outcome: None,
                    seen_seconds: now_seconds,
                });
                Begin::New
            }
        }
    }

    /// Records the outcome that was sent, for retransmissions.
    pub fn finish(&self, identity: &RequestIdentity, outcome: Outcome) {
        if let Some(mut entry) = self.entries.get_mut(identity) {
            entry.outcome = Some(outcome);
        }
    }

    /// Forgets a request that was shed before any decision, so a retransmission is tried anew.
    pub fn abandon(&self, identity: &RequestIdentity) {
        if self.entries.remove(identity).is_some() {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Puts back an answered request found in the log at start-up. False when the store is
    /// full (the request then counts as new if retransmitted).
    pub fn restore(
        &self,
        identity: RequestIdentity,
        fingerprint: u64,
        outcome: Outcome,
        seen_seconds: u64,
    ) -> bool {
        if self.count.load(Ordering::Relaxed) >= self.entries_max {
            return false;
        }
        let entry = Entry {
            fingerprint,
            outcome: Some(outcome),
            seen_seconds,
        };
        if self.entries.insert(identity, entry).is_none() {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Drops answered entries older than the retention; returns how many.
    pub fn sweep(&self, now_seconds: u64) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, entry| {
            entry.outcome.is_none()
                || now_seconds.saturating_sub(entry.seen_seconds) < self.retention_seconds
        });
        let removed = before.saturating_sub(self.entries.len());
        self.count.fetch_sub(
            removed.min(self.count.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        removed
    }

    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
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

    #[test]
    fn lifecycle() {
        let store = IdempotencyStore::new(2, 10);
        let approved = Outcome {
            code: ResponseCode::Approved,
            auth_id: Some(*b"000001"),
            balances: None,
        };
        assert_eq!(store.begin(id(1), 7, 0), Begin::New);
        assert_eq!(store.begin(id(1), 7, 0), Begin::InFlight);
        assert_eq!(store.begin(id(1), 8, 0), Begin::Conflict);
        store.finish(&id(1), approved);
        assert_eq!(store.begin(id(1), 7, 1), Begin::Replay(approved));
        assert_eq!(store.begin(id(1), 8, 1), Begin::Conflict);
        assert_eq!(store.begin(id(2), 7, 1), Begin::New);
        assert_eq!(store.begin(id(3), 7, 1), Begin::Full);
        store.abandon(&id(2));
        assert_eq!(store.len(), 1);
        assert_eq!(store.begin(id(3), 7, 1), Begin::New);
        // id(3) is unanswered: kept by the sweep whatever its age.
        assert_eq!(store.sweep(10), 1);
        assert_eq!(store.len(), 1);
        assert_eq!(
            store.begin(id(1), 7, 11),
            Begin::New,
            "forgotten after the retention"
        );
    }
}
