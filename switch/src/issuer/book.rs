//! The remote approvals an issuer channel remembers, so that an acquirer's reversal or
//! completion of one names the switch's own request to the issuer (field 90).
//!
//! Bounded (the oldest go first) and taken into every snapshot without stalling the channel:
//! entries live in insertion order in chunks of [`CHUNK`] behind `Arc`s, so a snapshot takes
//! the chunks (a pointer each) and the channel copies a chunk only when it changes one that a
//! snapshot still holds (copy on write, at most [`CHUNK`] entries at a time). An index finds
//! each key's newest entry.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::domain::TxnKey;
use crate::wal::format::RemoteOriginal;

/// Entries per chunk: a chunk copied on write is about 0.8 MB, a fraction of a millisecond.
pub const CHUNK: usize = 16 * 1024;

/// The chunks of a book as a snapshot took them, oldest first. A key may appear more than
/// once (sent again after a restart): the last one counts.
pub type Taken = Vec<Arc<Vec<RemoteOriginal>>>;

#[derive(Debug)]
pub struct Book {
    chunks: VecDeque<Arc<Vec<RemoteOriginal>>>,
    /// Sequence number of the first entry of the first chunk.
    first: u64,
    /// Each key's newest entry, by sequence number.
    index: HashMap<TxnKey, u64>,
    /// Entries in the chunks (superseded ones included).
    total: usize,
    max: usize,
}

impl Book {
    /// A book keeping at most `max` entries (rounded up to whole chunks).
    pub fn new(max: usize) -> Book {
        Book {
            chunks: VecDeque::new(),
            first: 0,
            index: HashMap::new(),
            total: 0,
            max: max.max(1),
        }
    }

    fn next_seq(&self) -> u64 {
        self.first + self.total as u64
    }

    fn locate(&self, seq: u64) -> Option<(usize, usize)> {
        let offset = usize::try_from(seq.checked_sub(self.first)?).ok()?;
        let (chunk, slot) = (offset / CHUNK, offset % CHUNK);
        (self.chunks.get(chunk)?.len() > slot).then_some((chunk, slot))
    }

    /// Remembers the approval of `key`, sent as `mti` / `stan`, not reversed; it replaces an
    /// earlier approval of the same key.
    pub fn insert(&mut self, key: TxnKey, mti: [u8; 4], stan: u32) {
        let entry = RemoteOriginal {
            key,
            mti,
            stan,
            reversed: false,
        };
        let seq = self.next_seq();
        match self.chunks.back_mut() {
            Some(last) if last.len() < CHUNK => Arc::make_mut(last).push(entry),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(entry);
                self.chunks.push_back(Arc::new(chunk));
            }
        }
        self.index.insert(key, seq);
        self.total += 1;
        // The oldest chunk goes once the rest hold `max` entries: never fewer are kept.
        while self.chunks.len() > 1
            && self.total - self.chunks.front().map_or(0, |c| c.len()) >= self.max
        {
            self.evict_oldest_chunk();
        }
    }

    fn evict_oldest_chunk(&mut self) {
        let Some(oldest) = self.chunks.pop_front() else {
            return;
        };
        for (i, entry) in oldest.iter().enumerate() {
            let seq = self.first + i as u64;
            if self.index.get(&entry.key) == Some(&seq) {
                self.index.remove(&entry.key);
            }
        }
        self.first += oldest.len() as u64;
        self.total -= oldest.len();
    }

    /// The newest approval of `key`.
    pub fn get(&self, key: &TxnKey) -> Option<RemoteOriginal> {
        let (chunk, slot) = self.locate(*self.index.get(key)?)?;
        Some(self.chunks[chunk][slot])
    }

    /// Marks the newest approval of `key` reversed; false if there is none.
    pub fn set_reversed(&mut self, key: &TxnKey) -> bool {
        let Some((chunk, slot)) = self.index.get(key).and_then(|&seq| self.locate(seq)) else {
            return false;
        };
        Arc::make_mut(&mut self.chunks[chunk])[slot].reversed = true;
        true
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// What a snapshot keeps: the chunks, shared (a pointer copy each).
    pub fn take(&self) -> Taken {
        self.chunks.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> TxnKey {
        TxnKey {
            acquirer: 1,
            terminal: *b"T1      ",
            stan: n,
            transmission: 7,
        }
    }

    #[test]
    fn finds_the_newest_entry_marks_it_and_forgets_the_oldest_chunks() {
        let mut book = Book::new(2 * CHUNK);
        let n = u32::try_from(3 * CHUNK).unwrap();
        for i in 0..n {
            book.insert(key(i), *b"0100", i);
        }
        // Three chunks' worth, bound two: the first chunk is gone, the rest found.
        assert!(book.get(&key(0)).is_none());
        assert_eq!(book.get(&key(n - 1)).map(|o| o.stan), Some(n - 1));
        assert_eq!(book.len(), 2 * CHUNK);
        // A key sent again: the newest counts; reversing marks that one.
        let again = n - 1;
        book.insert(key(again), *b"0100", 999_999);
        assert_eq!(book.get(&key(again)).map(|o| o.stan), Some(999_999));
        assert!(book.set_reversed(&key(again)));
        assert_eq!(book.get(&key(again)).map(|o| o.reversed), Some(true));
        assert!(!book.set_reversed(&key(0)));
    }

    #[test]
    fn never_fewer_than_the_bound_are_kept() {
        for max in [1, 10_000, CHUNK, CHUNK + 1, 3 * CHUNK - 7] {
            let mut book = Book::new(max);
            let n = u32::try_from(4 * CHUNK + 5).unwrap();
            for i in 0..n {
                book.insert(key(i), *b"0100", i);
                let inserted = i as usize + 1;
                assert!(
                    book.len() >= max.min(inserted),
                    "max {max}: {} kept",
                    book.len()
                );
                assert!(book.len() <= max + CHUNK, "max {max}: {} kept", book.len());
            }
            // The newest `max` are all there.
            let newest = u32::try_from(max).unwrap();
            for i in n - newest..n {
                assert!(book.get(&key(i)).is_some(), "max {max}: {i} forgotten");
            }
        }
    }

    #[test]
    fn a_snapshot_keeps_what_it_took_while_the_book_changes() {
        let mut book = Book::new(4 * CHUNK);
        for i in 0..10 {
            book.insert(key(i), *b"0100", i);
        }
        let taken = book.take();
        assert!(book.set_reversed(&key(3)));
        book.insert(key(10), *b"0100", 10);
        let flat: Vec<RemoteOriginal> = taken.iter().flat_map(|c| c.iter().copied()).collect();
        assert_eq!(flat.len(), 10, "the snapshot does not see later entries");
        assert!(!flat[3].reversed, "nor later changes");
        assert_eq!(book.get(&key(3)).map(|o| o.reversed), Some(true));
    }
}
