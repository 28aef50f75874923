//! A shard's large tables, shared with a snapshot's view instead of copied.
//!
//! A snapshot needs the shard's state as it stood between two records. Copying millions of
//! accounts and transactions on the shard's thread stopped the shard for 0.3–1.0 s at the
//! default hot window of 4 M transactions (bench/RESULTS.md). Here a map is [`PARTS`] parts:
//! taking a view moves each part's table behind a reference count (its entries stay where
//! they are), and the snapshotter copies the view into plain vectors on its own thread, then
//! lets go of it. While a view holds a table, the shard's writes to that part go to the part's
//! overlay (a small table of the keys written since, with their values or their removal);
//! the first write after the view is gone takes the table back without a copy and folds the
//! overlay in. Copying a part on its first write instead (copy-on-write) did not help: keys
//! are random, so the first few dozen requests after a view touch every part, and the shard
//! copied all of it anyway, in pieces, back to back. A queue is chunks of [`CHUNK`] entries;
//! only its last chunk is ever written, and copied if a view holds it.
//!
//! Why sixteen parts: on the ledger's criterion bench (`ledger apply: authorization`,
//! alternated with the build before this change) 16 parts cost nothing measurable, 64 parts
//! 18–35% and 256 parts 50–60% (the cause was not found: this VM exposes no hardware
//! counters). With the overlays' checks, the bench is about 13% slower than before the change
//! (bench/RESULTS.md). A part also grows (rehashes) alone: a sixteenth of the table at a time.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

const PART_BITS: u32 = 4;
/// Parts of a [`PartedMap`].
pub const PARTS: usize = 1 << PART_BITS;
/// Entries in a chunk of a [`PartedDeque`] (about 640 KB of queue entries).
pub const CHUNK: usize = 16_384;

/// The part of a key by its hash: bits that hashbrown uses neither for the bucket (the low
/// bits) nor for the tag of a slot (the top 7), so that the keys of one part still spread over
/// its buckets.
fn part_of(hash: u64) -> usize {
    usize::try_from(hash >> (64 - 7 - PART_BITS)).unwrap_or(0) & (PARTS - 1)
}

/// A map's entries with their count: a [`PartedMap`] or a [`MapView`] of one.
pub trait Pairs<K, V> {
    fn count(&self) -> usize;
    fn pairs<'a>(&'a self) -> impl Iterator<Item = (&'a K, &'a V)>
    where
        K: 'a,
        V: 'a;
}

/// A queue's entries, oldest first, with their count: a [`PartedDeque`] or a [`DequeView`].
pub trait Items<T> {
    fn count(&self) -> usize;
    fn items<'a>(&'a self) -> impl Iterator<Item = &'a T>
    where
        T: 'a;
}

impl<K: Hash + Eq + Clone, V: Clone, S: BuildHasher> Pairs<K, V> for PartedMap<K, V, S> {
    fn count(&self) -> usize {
        self.len()
    }
    fn pairs<'a>(&'a self) -> impl Iterator<Item = (&'a K, &'a V)>
    where
        K: 'a,
        V: 'a,
    {
        self.iter()
    }
}

impl<K, V> Pairs<K, V> for MapView<K, V> {
    fn count(&self) -> usize {
        self.len()
    }
    fn pairs<'a>(&'a self) -> impl Iterator<Item = (&'a K, &'a V)>
    where
        K: 'a,
        V: 'a,
    {
        self.iter()
    }
}

impl<T: Clone> Items<T> for PartedDeque<T> {
    fn count(&self) -> usize {
        self.len()
    }
    fn items<'a>(&'a self) -> impl Iterator<Item = &'a T>
    where
        T: 'a,
    {
        self.iter()
    }
}

impl<T> Items<T> for DequeView<T> {
    fn count(&self) -> usize {
        self.len()
    }
    fn items<'a>(&'a self) -> impl Iterator<Item = &'a T>
    where
        T: 'a,
    {
        self.iter()
    }
}

/// A map's table or a queue's chunk: owned while no view holds it, so that the shard reads
/// and writes it without an atomic operation on a reference count; shared once a view was
/// taken. A map's table is taken back without a copy once no view holds it (writes go to an
/// overlay meanwhile); a queue's last chunk is copied if written while a view holds it.
enum Part<T> {
    Own(T),
    Shared(Arc<T>),
}

impl<T: Clone + Default> Part<T> {
    fn get(&self) -> &T {
        match self {
            Part::Own(owned) => owned,
            Part::Shared(shared) => shared,
        }
    }

    /// The chunk to write: taken back from the views first, copied only if one still holds it.
    fn get_mut(&mut self) -> &mut T {
        if let Part::Shared(shared) = self {
            let owned = std::mem::take(Arc::make_mut(shared));
            *self = Part::Own(owned);
        }
        match self {
            Part::Own(owned) => owned,
            // Not reached: made owned just above.
            Part::Shared(shared) => Arc::make_mut(shared),
        }
    }

    /// The part shared with a new view: moved behind a reference count if owned (its header
    /// moves; its entries stay where they are).
    fn share(&mut self) -> Arc<T> {
        if let Part::Own(owned) = self {
            let shared = Arc::new(std::mem::take(owned));
            *self = Part::Shared(shared);
        }
        match self {
            Part::Shared(shared) => shared.clone(),
            // Not reached: made shared just above.
            Part::Own(owned) => Arc::new(owned.clone()),
        }
    }
}

/// One part of a map.
type Table<K, V> = HashTable<(K, V)>;

/// A part of a map: its table, and the writes made while a view holds the table.
struct Slot<K, V> {
    base: Part<Table<K, V>>,
    /// While a view holds `base`: each key written since, with its value (`None`: removed).
    /// Folded into `base` by the first write once no view holds it. It holds the writes made
    /// while the view waits for its marker to be durable and for the snapshotter to copy it
    /// (and the views of the shards before it): 0.3–0.6 s per view of 1–3 M transactions on
    /// this machine, so tens of thousands of entries per shard at 20,000 requests/s, and
    /// seconds' worth with many shards at a large hot window.
    overlay: HashTable<(K, Option<V>)>,
}

/// A hash map in [`PARTS`] parts. A view shares every part's table; writes made while a view
/// holds a table go to that part's overlay, so the shard copies nothing for the snapshot.
pub struct PartedMap<K, V, S> {
    slots: Box<[Slot<K, V>]>,
    hasher: S,
    len: usize,
}

/// What a [`PartedMap`] held when [`PartedMap::view`] was called: unchanged by later writes.
pub struct MapView<K, V> {
    parts: Box<[Arc<Table<K, V>>]>,
    len: usize,
}

impl<K, V> MapView<K, V> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.parts
            .iter()
            .flat_map(|part| part.iter().map(|(k, v)| (k, v)))
    }
}

impl<K, V, S: Default> Default for PartedMap<K, V, S> {
    fn default() -> Self {
        PartedMap {
            slots: (0..PARTS)
                .map(|_| Slot {
                    base: Part::Own(HashTable::new()),
                    overlay: HashTable::new(),
                })
                .collect(),
            hasher: S::default(),
            len: 0,
        }
    }
}

impl<K, V, S> std::fmt::Debug for PartedMap<K, V, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartedMap").field("len", &self.len).finish()
    }
}

impl<K, V> std::fmt::Debug for MapView<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapView").field("len", &self.len).finish()
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Slot<K, V> {
    /// The value of `key`: the overlay's word first, else the table's.
    fn find(&self, hash: u64, key: &K) -> Option<&V> {
        if !self.overlay.is_empty()
            && let Some((_, value)) = self.overlay.find(hash, |(k, _)| k == key)
        {
            return value.as_ref();
        }
        self.base
            .get()
            .find(hash, |(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// The table, to write in place, once no view holds it (taken back without a copy, with
    /// the overlay folded in); `None` while one does.
    fn table_mut(&mut self, hasher: &impl BuildHasher) -> Option<&mut Table<K, V>> {
        if let Part::Shared(shared) = &mut self.base {
            let table = std::mem::take(Arc::get_mut(shared)?);
            self.base = Part::Own(table);
        }
        let Part::Own(table) = &mut self.base else {
            return None;
        };
        if self.overlay.is_empty() {
            return Some(table);
        }
        // Its memory goes too: the next view's writes start a small one.
        for (key, value) in std::mem::take(&mut self.overlay) {
            let hash = hasher.hash_one(&key);
            let found = table.find_entry(hash, |(k, _)| *k == key);
            match (found, value) {
                (Ok(mut slot), Some(value)) => slot.get_mut().1 = value,
                (Ok(slot), None) => {
                    slot.remove();
                }
                (Err(_), Some(value)) => {
                    table.insert_unique(hash, (key, value), |(k, _)| hasher.hash_one(k));
                }
                (Err(_), None) => {}
            }
        }
        Some(table)
    }

    /// Records `value` for `key` in the overlay (a view holds the table).
    fn overlay_set(&mut self, hash: u64, key: K, value: Option<V>, hasher: &impl BuildHasher) {
        match self
            .overlay
            .entry(hash, |(k, _)| *k == key, |(k, _)| hasher.hash_one(k))
        {
            Entry::Occupied(mut slot) => slot.get_mut().1 = value,
            Entry::Vacant(slot) => {
                slot.insert((key, value));
            }
        }
    }
}

impl<K, V, S> PartedMap<K, V, S>
where
    K: Hash + Eq + Clone,
    V: Clone,
    S: BuildHasher,
{
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        let hash = self.hasher.hash_one(key);
        self.slots[part_of(hash)].find(hash, key)
    }

    pub fn contains_key(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let hash = self.hasher.hash_one(key);
        let PartedMap { slots, hasher, .. } = self;
        let slot = &mut slots[part_of(hash)];
        if slot.table_mut(hasher).is_none() {
            let current = slot.find(hash, key)?.clone();
            slot.overlay_set(hash, key.clone(), Some(current), hasher);
            return slot
                .overlay
                .find_mut(hash, |(k, _)| k == key)
                .and_then(|(_, v)| v.as_mut());
        }
        let Part::Own(table) = &mut slot.base else {
            return None;
        };
        table.find_mut(hash, |(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let hash = self.hasher.hash_one(&key);
        let PartedMap { slots, hasher, len } = self;
        let slot = &mut slots[part_of(hash)];
        let Some(table) = slot.table_mut(hasher) else {
            let before = slot.find(hash, &key).cloned();
            slot.overlay_set(hash, key, Some(value), hasher);
            if before.is_none() {
                *len += 1;
            }
            return before;
        };
        match table.entry(hash, |(k, _)| *k == key, |(k, _)| hasher.hash_one(k)) {
            Entry::Occupied(mut slot) => Some(std::mem::replace(&mut slot.get_mut().1, value)),
            Entry::Vacant(slot) => {
                slot.insert((key, value));
                *len += 1;
                None
            }
        }
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let hash = self.hasher.hash_one(key);
        let PartedMap { slots, hasher, len } = self;
        let slot = &mut slots[part_of(hash)];
        let removed = match slot.table_mut(hasher) {
            Some(table) => {
                let found = table.find_entry(hash, |(k, _)| k == key).ok()?;
                let ((_, value), _) = found.remove();
                value
            }
            None => {
                let before = slot.find(hash, key)?.clone();
                slot.overlay_set(hash, key.clone(), None, hasher);
                before
            }
        };
        *len -= 1;
        Some(removed)
    }

    /// Room for `count` entries in all without growing a part (each part gets its share and
    /// an eighth more: keys spread unevenly over parts). A part a view holds is left as it is.
    pub fn reserve_total(&mut self, count: usize) {
        let share = count / PARTS;
        let per_part = share.saturating_add(share / 8).saturating_add(16);
        let PartedMap { slots, hasher, .. } = self;
        for slot in slots.iter_mut() {
            if let Some(table) = slot.table_mut(hasher)
                && table.capacity() < per_part
            {
                let additional = per_part.saturating_sub(table.len());
                table.reserve(additional, |(k, _)| hasher.hash_one(k));
            }
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots
            .iter()
            .map(|slot| slot.base.get().capacity())
            .sum()
    }

    /// Every entry, the overlays' word first (a table entry the overlay rewrote or removed is
    /// skipped: the overlay gives what stands).
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        let hasher = &self.hasher;
        self.slots.iter().flat_map(move |slot| {
            let overlay = &slot.overlay;
            let kept = slot.base.get().iter().filter(move |(k, _)| {
                overlay.is_empty() || overlay.find(hasher.hash_one(k), |(o, _)| o == k).is_none()
            });
            let written = overlay
                .iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)));
            kept.map(|(k, v)| (k, v)).chain(written)
        })
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    /// The map as it is now, for a snapshot: a reference count per part, no entry copied. A
    /// part that an earlier view still holds with writes since is copied once, with them.
    pub fn view(&mut self) -> MapView<K, V> {
        let PartedMap { slots, hasher, len } = self;
        let parts = slots
            .iter_mut()
            .map(|slot| {
                if slot.table_mut(hasher).is_none() && !slot.overlay.is_empty() {
                    let mut table = slot.base.get().clone();
                    for (key, value) in std::mem::take(&mut slot.overlay) {
                        let hash = hasher.hash_one(&key);
                        if let Ok(found) = table.find_entry(hash, |(k, _)| *k == key) {
                            found.remove();
                        }
                        if let Some(value) = value {
                            table.insert_unique(hash, (key, value), |(k, _)| hasher.hash_one(k));
                        }
                    }
                    slot.base = Part::Own(table);
                }
                slot.base.share()
            })
            .collect();
        MapView { parts, len: *len }
    }
}

impl<K, V, S> FromIterator<(K, V)> for PartedMap<K, V, S>
where
    K: Hash + Eq + Clone,
    V: Clone,
    S: BuildHasher + Default,
{
    fn from_iter<I: IntoIterator<Item = (K, V)>>(entries: I) -> Self {
        let entries = entries.into_iter();
        let mut map = PartedMap::default();
        map.reserve_total(entries.size_hint().0);
        for (key, value) in entries {
            map.insert(key, value);
        }
        map
    }
}

/// A queue in chunks of [`CHUNK`] entries, shared with the views taken of it: pushing copies
/// the last chunk alone if a view holds it, and popping copies nothing (the first chunk is
/// read past, and dropped once read through).
pub struct PartedDeque<T> {
    chunks: VecDeque<Part<Vec<T>>>,
    /// Entries of the first chunk already popped.
    head: usize,
    len: usize,
}

/// What a [`PartedDeque`] held when [`PartedDeque::view`] was called.
pub struct DequeView<T> {
    chunks: Vec<Arc<Vec<T>>>,
    head: usize,
    len: usize,
}

impl<T> DequeView<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().enumerate().flat_map(|(i, chunk)| {
            chunk
                .get(if i == 0 { self.head } else { 0 }..)
                .unwrap_or(&[])
        })
    }
}

impl<T> Default for PartedDeque<T> {
    fn default() -> Self {
        PartedDeque {
            chunks: VecDeque::new(),
            head: 0,
            len: 0,
        }
    }
}

impl<T> std::fmt::Debug for PartedDeque<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartedDeque")
            .field("len", &self.len)
            .finish()
    }
}

impl<T> std::fmt::Debug for DequeView<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DequeView").field("len", &self.len).finish()
    }
}

impl<T: Clone> PartedDeque<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push_back(&mut self, entry: T) {
        match self.chunks.back_mut() {
            Some(last) if last.get().len() < CHUNK => last.get_mut().push(entry),
            _ => self.chunks.push_back(Part::Own(vec![entry])),
        }
        self.len += 1;
    }

    pub fn front(&self) -> Option<&T> {
        self.chunks.front()?.get().get(self.head)
    }

    pub fn pop_front(&mut self) -> Option<T> {
        let first = self.chunks.front()?.get();
        let entry = first.get(self.head)?.clone();
        let read_through = self.head + 1 >= first.len();
        self.head += 1;
        self.len -= 1;
        if read_through {
            self.chunks.pop_front();
            self.head = 0;
        }
        Some(entry)
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().enumerate().flat_map(|(i, chunk)| {
            chunk
                .get()
                .get(if i == 0 { self.head } else { 0 }..)
                .unwrap_or(&[])
        })
    }

    /// Room for `count` entries in all: the chunks' table (the chunks themselves are
    /// allocated as they fill).
    pub fn reserve_total(&mut self, count: usize) {
        let chunks = count.div_ceil(CHUNK).saturating_add(1);
        self.chunks
            .reserve(chunks.saturating_sub(self.chunks.len()));
    }

    /// The queue as it is now, for a snapshot: a reference count per chunk.
    pub fn view(&mut self) -> DequeView<T> {
        DequeView {
            chunks: self.chunks.iter_mut().map(Part::share).collect(),
            head: self.head,
            len: self.len,
        }
    }
}

impl<T: Clone> From<Vec<T>> for PartedDeque<T> {
    fn from(entries: Vec<T>) -> Self {
        let len = entries.len();
        let mut chunks = VecDeque::with_capacity(len.div_ceil(CHUNK));
        let mut entries = entries.into_iter();
        loop {
            let chunk: Vec<T> = entries.by_ref().take(CHUNK).collect();
            if chunk.is_empty() {
                break;
            }
            chunks.push_back(Part::Own(chunk));
        }
        PartedDeque {
            chunks,
            head: 0,
            len,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashMap};

    type Map = PartedMap<u64, u64, crate::domain::hash::TableHasher>;

    fn sorted<'a>(entries: impl Iterator<Item = (&'a u64, &'a u64)>) -> Vec<(u64, u64)> {
        let mut all: Vec<(u64, u64)> = entries.map(|(k, v)| (*k, *v)).collect();
        all.sort_unstable();
        all
    }

    /// The same operations on a `PartedMap` with views taken now and then, and on a std
    /// `HashMap` with copies taken at the same points: every view equals its copy at the end.
    #[test]
    fn a_view_keeps_what_the_map_held_whatever_is_written_after_it() {
        let mut map = Map::default();
        let mut model: HashMap<u64, u64> = HashMap::new();
        let mut views = Vec::new();
        let mut checked = 0;
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for step in 0..60_000u64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let key = state % 5_000;
            match state % 7 {
                0..=2 => assert_eq!(map.insert(key, step), model.insert(key, step)),
                3 | 4 => assert_eq!(map.remove(&key), model.remove(&key)),
                5 => {
                    if let Some(value) = map.get_mut(&key) {
                        *value += 1;
                    }
                    if let Some(value) = model.get_mut(&key) {
                        *value += 1;
                    }
                }
                _ => assert_eq!(map.get(&key), model.get(&key)),
            }
            assert_eq!(map.len(), model.len());
            if step % 2_917 == 0 {
                views.push((map.view(), sorted(model.iter())));
            }
            // Some views let go of (parts taken back, overlays folded in), others kept while
            // new ones are taken (parts a view holds with writes since are copied).
            if step % 4_999 == 0 && views.len() > 1 {
                let (view, copy) = views.remove(usize::try_from(state % 2).unwrap_or(0));
                assert_eq!(view.len(), copy.len());
                assert_eq!(sorted(view.iter()), copy);
                checked += 1;
            }
            if step % 997 == 0 {
                assert_eq!(sorted(map.iter()), sorted(model.iter()), "step {step}");
            }
        }
        assert_eq!(sorted(map.iter()), sorted(model.iter()));
        assert!(views.len() >= 2 && checked >= 10);
        for (view, copy) in &views {
            assert_eq!(view.len(), copy.len());
            assert_eq!(sorted(view.iter()), *copy);
        }
    }

    #[test]
    fn writes_while_a_view_is_held_copy_nothing_and_are_folded_in_once_it_is_gone() {
        let mut map: Map = (0..10_000u64).map(|k| (k, k)).collect();
        let view = map.view();
        let shared = |map: &Map| {
            map.slots
                .iter()
                .zip(view.parts.iter())
                .filter(|(slot, b)| matches!(&slot.base, Part::Shared(a) if Arc::ptr_eq(a, b)))
                .count()
        };
        assert_eq!(shared(&map), PARTS);
        for key in 0..2_000 {
            assert_eq!(map.insert(key, key + 1), Some(key));
        }
        for key in 2_000..3_000 {
            assert_eq!(map.remove(&key), Some(key));
        }
        for key in 10_000..10_500 {
            assert_eq!(map.insert(key, key), None);
        }
        *map.get_mut(&5_000).unwrap() = 7;
        assert_eq!(map.remove(&20_000), None);
        assert_eq!(map.remove(&2_500), None);
        assert_eq!(map.get_mut(&2_501), None);
        assert_eq!(shared(&map), PARTS, "a write copied a part the view holds");
        assert_eq!(map.len(), 10_000 - 1_000 + 500);
        assert_eq!(sorted(map.iter()).len(), map.len());
        assert_eq!(
            (map.get(&1), map.get(&2_500), map.get(&5_000)),
            (Some(&2), None, Some(&7))
        );
        assert_eq!(view.len(), 10_000);
        assert!(view.iter().all(|(k, v)| k == v) && view.iter().count() == 10_000);
        drop(view);
        // The next write to a part takes its table back and folds its overlay in.
        map.insert(1, 3);
        let folded = map
            .slots
            .iter()
            .filter(|slot| matches!(slot.base, Part::Own(_)) && slot.overlay.is_empty())
            .count();
        assert_eq!(folded, 1);
        let next = map.view();
        assert_eq!(sorted(next.iter()), sorted(map.iter()));
        assert!(map.slots.iter().all(|slot| slot.overlay.is_empty()));
        assert_eq!(map.get(&1), Some(&3));
    }

    #[test]
    fn reserving_the_total_leaves_room_in_every_part() {
        let mut map = Map::default();
        map.reserve_total(100_000);
        let capacity = map.capacity();
        assert!(capacity >= 100_000);
        map.extend_for_test(0..100_000);
        assert_eq!(map.capacity(), capacity, "a part grew");
    }

    impl Map {
        fn extend_for_test(&mut self, keys: std::ops::Range<u64>) {
            for key in keys {
                self.insert(key, key);
            }
        }
    }

    #[test]
    fn a_queue_emptied_and_refilled_under_a_view_leaves_the_view_whole() {
        let mut queue: PartedDeque<u64> = PartedDeque::default();
        let empty = queue.view();
        queue.push_back(1);
        queue.push_back(2);
        let two = queue.view();
        queue.push_back(3);
        assert_eq!((queue.pop_front(), queue.pop_front()), (Some(1), Some(2)));
        assert_eq!(queue.pop_front(), Some(3));
        assert!(queue.is_empty() && queue.pop_front().is_none());
        queue.push_back(4);
        assert!(empty.is_empty() && empty.iter().next().is_none());
        assert_eq!(two.iter().copied().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(queue.iter().copied().collect::<Vec<_>>(), [4]);
    }

    #[test]
    fn a_queue_pops_in_order_across_chunks_and_views_keep_their_entries() {
        let mut queue: PartedDeque<u64> = (0..(CHUNK as u64 + 10)).collect::<Vec<_>>().into();
        let mut model: VecDeque<u64> = (0..(CHUNK as u64 + 10)).collect();
        let mut views: BTreeMap<usize, (DequeView<u64>, Vec<u64>)> = BTreeMap::new();
        let mut next = CHUNK as u64 + 10;
        for step in 0..(4 * CHUNK) {
            if step % 3 == 2 {
                assert_eq!(queue.pop_front(), model.pop_front());
            } else {
                queue.push_back(next);
                model.push_back(next);
                next += 1;
            }
            assert_eq!(queue.front(), model.front());
            assert_eq!(queue.len(), model.len());
            if step % 10_007 == 0 {
                views.insert(step, (queue.view(), model.iter().copied().collect()));
            }
        }
        while let Some(entry) = model.pop_front() {
            assert_eq!(queue.pop_front(), Some(entry));
        }
        assert_eq!(queue.pop_front(), None);
        assert!(queue.is_empty() && queue.front().is_none());
        assert!(views.len() >= 6);
        for (view, copy) in views.values() {
            assert_eq!(view.len(), copy.len());
            assert_eq!(view.iter().copied().collect::<Vec<_>>(), *copy);
        }
    }
}
