//! Reads of the store off the shard's thread. A request whose lookups would read the store
//! (a completion or reversal of a transaction that left the hot window) waits in [`Parked`]
//! while a thread of the shard's own reads what it needs ([`spawn_reader`]); the shard goes
//! on serving everything else meanwhile, and applies the waiting requests in their order of
//! arrival once what they look up is in memory.
//!
//! Order: a request that looks up a key a waiting request looks up waits behind it, so two
//! requests about one transaction are applied in the order they came. Requests about other
//! transactions may pass a waiting one (they were in flight together; the log records the
//! order they were applied in, and replay repeats it).
//!
//! Nothing here decides anything: what a read finds is only a value of the store held in
//! memory ([`super::ColdTier::fetched`]); a write of the key since the read started makes it
//! stale and it is dropped. Whatever is still unknown when a request's turn comes is read on
//! the shard's thread, as before.

use std::collections::{HashMap, HashSet, VecDeque};

use super::shard::{ColdReader, LedgerShard};
use crate::domain::hash::TableHasher;
use crate::domain::{Posting, TxnKey};
use crate::limits::PARKED_MAX;

/// Reads a request may start when its turn comes, beyond those at its arrival, before what
/// is still unknown is read on the shard's thread (a reversed completion needs its hold,
/// known only once the completion is read).
const READ_ROUNDS_MAX: u8 = 2;

/// What a request's turn depends on: its lookups ([`LedgerShard::lookups`]) and its own key
/// (a later reversal of it must not pass it).
type Keys = [Option<TxnKey>; 4];

fn keys_of(lookups: [Option<TxnKey>; 3], posting: &Posting) -> Keys {
    let [own, original, hold] = lookups;
    [own, original, hold, Some(posting.key)]
}

/// The lookups among `lookups` that would read the store: the duplicate check (first) only if
/// a filter says the key may be there, the others whenever they are not known in memory.
fn to_read(shard: &LedgerShard, lookups: &[Option<TxnKey>; 3]) -> impl Iterator<Item = TxnKey> {
    let reads: [Option<TxnKey>; 3] =
        std::array::from_fn(|i| lookups[i].filter(|key| shard.would_read(key, i > 0)));
    reads.into_iter().flatten()
}

/// A request waiting for reads of the store.
#[derive(Debug)]
struct Waiting<T> {
    item: T,
    posting: Posting,
    /// Later requests with one of these wait behind it.
    keys: Keys,
    rounds: u8,
}

/// The requests of one shard that wait for reads of its store, in their order of arrival.
#[derive(Debug)]
pub struct Parked<T> {
    queue: VecDeque<Waiting<T>>,
    /// Per key, the waiting requests that look it up.
    keys: HashMap<TxnKey, u32, TableHasher>,
    /// Keys being read.
    reading: HashSet<TxnKey, TableHasher>,
    /// When a read last arrived, or reads started after none was out.
    progress: std::time::Instant,
    max: usize,
}

impl<T> Default for Parked<T> {
    fn default() -> Parked<T> {
        Parked::new(PARKED_MAX)
    }
}

impl<T> Parked<T> {
    /// At most `max` requests wait: see [`Parked::is_full`].
    pub fn new(max: usize) -> Parked<T> {
        Parked {
            queue: VecDeque::new(),
            keys: HashMap::default(),
            reading: HashSet::default(),
            progress: std::time::Instant::now(),
            max: max.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// As many wait as may: before the next [`Parked::admit`], the caller applies the first
    /// with [`Parked::pop_front`] (reading on its own thread what has not arrived), so that
    /// no request ever passes another about the same transaction.
    pub fn is_full(&self) -> bool {
        self.queue.len() >= self.max
    }

    /// How long reads have been out without one arriving (`None`: none is out). A slow disk
    /// keeps them arriving; a stuck one does not.
    pub fn reads_stalled_for(&self) -> Option<std::time::Duration> {
        (!self.reading.is_empty()).then(|| self.progress.elapsed())
    }

    /// Reads out (for tests).
    pub fn reading(&self) -> usize {
        self.reading.len()
    }

    /// Takes a request (`item`, whose posting is `posting`). Gives it back to be applied now
    /// if nothing it looks up needs a read and no waiting request looks up the same; else
    /// keeps it, starting the reads it needs with `read` (false: the read could not be
    /// queued, and the request reads on the shard's thread when its turn comes). The caller
    /// sees to it that the queue is not full ([`Parked::is_full`]).
    pub fn admit(
        &mut self,
        shard: &mut LedgerShard,
        posting: Posting,
        item: T,
        read: &mut impl FnMut(TxnKey) -> bool,
    ) -> Option<T> {
        let lookups = shard.lookups(&posting);
        let keys = keys_of(lookups, &posting);
        let behind =
            !self.keys.is_empty() && keys.iter().flatten().any(|key| self.keys.contains_key(key));
        if !behind && to_read(shard, &lookups).next().is_none() {
            return Some(item);
        }
        self.start_reads(shard, &lookups, read);
        self.count(&keys, true);
        self.queue.push_back(Waiting {
            item,
            posting,
            keys,
            rounds: 0,
        });
        None
    }

    /// Counts `keys` in (or out of) the waiting requests' keys.
    fn count(&mut self, keys: &Keys, add: bool) {
        for key in keys.iter().flatten() {
            if add {
                *self.keys.entry(*key).or_insert(0) += 1;
            } else if let Some(count) = self.keys.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    self.keys.remove(key);
                }
            }
        }
    }

    /// Starts a read of each of `lookups` that needs one and is not being read; true if any
    /// is being read now.
    fn start_reads(
        &mut self,
        shard: &mut LedgerShard,
        lookups: &[Option<TxnKey>; 3],
        read: &mut impl FnMut(TxnKey) -> bool,
    ) -> bool {
        let mut waits = lookups
            .iter()
            .flatten()
            .any(|key| self.reading.contains(key));
        let needed: Vec<TxnKey> = to_read(shard, lookups)
            .filter(|key| !self.reading.contains(key))
            .collect();
        for key in needed {
            if read(key) {
                if self.reading.is_empty() {
                    self.progress = std::time::Instant::now();
                }
                shard.fetch_started(&key);
                self.reading.insert(key);
                waits = true;
            }
        }
        waits
    }

    /// What a read found for `key`, into the shard's memory for the lookups to come.
    pub fn arrived(
        &mut self,
        shard: &mut LedgerShard,
        key: TxnKey,
        value: Result<Option<Vec<u8>>, String>,
    ) {
        if self.reading.remove(&key) {
            self.progress = std::time::Instant::now();
            shard.fetched(&key, value);
            // Read for a request applied meanwhile (a full queue): nothing waits for it.
            if !self.keys.contains_key(&key) {
                shard.forget_fetched(&key);
            }
        }
    }

    /// The first waiting request, once what it looks up is in memory (its reads arrived, or
    /// one more round of reads did not help): the caller applies it, then calls
    /// [`Parked::applied`] with the keys given back.
    pub fn next_ready(
        &mut self,
        shard: &mut LedgerShard,
        read: &mut impl FnMut(TxnKey) -> bool,
    ) -> Option<(T, Keys)> {
        let front = self.queue.front()?;
        // Its lookups now: more may be known (the hold behind a completion: later requests
        // about it wait from now on), and a read whose value went stale asks again.
        let lookups = shard.lookups(&front.posting);
        let keys = keys_of(lookups, &front.posting);
        let (old, rounds) = (front.keys, front.rounds);
        if keys != old {
            self.count(&old, false);
            self.count(&keys, true);
            if let Some(front) = self.queue.front_mut() {
                front.keys = keys;
            }
        }
        if lookups
            .iter()
            .flatten()
            .any(|key| self.reading.contains(key))
        {
            return None;
        }
        if rounds < READ_ROUNDS_MAX && self.start_reads(shard, &lookups, read) {
            if let Some(front) = self.queue.front_mut() {
                front.rounds += 1;
            }
            return None;
        }
        // Whatever is still unknown is read on the shard's thread.
        self.pop_front()
    }

    /// The first waiting request, whatever it waits for: the caller applies it (reading on
    /// its own thread what has not arrived; a read arriving later is dropped if the request
    /// wrote its key), then calls [`Parked::applied`].
    pub fn pop_front(&mut self) -> Option<(T, Keys)> {
        let waiting = self.queue.pop_front()?;
        self.count(&waiting.keys, false);
        Some((waiting.item, waiting.keys))
    }

    /// After a request from [`Parked::next_ready`] or [`Parked::pop_front`] is applied: lets
    /// go of what the reads found for keys no waiting request looks up (of everything, once
    /// nothing waits).
    pub fn applied(&self, shard: &mut LedgerShard, keys: &Keys) {
        if self.queue.is_empty() && self.reading.is_empty() {
            shard.forget_all_fetched();
            return;
        }
        for key in keys.iter().flatten() {
            if !self.keys.contains_key(key) && !self.reading.contains(key) {
                shard.forget_fetched(key);
            }
        }
    }
}

/// A shard's reading thread: takes keys in order ([`PARKED_MAX`] may wait), reads each with
/// `reader` and hands what it found to `deliver`, until `deliver` says the shard is gone or
/// the sender is dropped. `None` if the thread could not start (the shard then reads on its
/// own thread).
pub fn spawn_reader(
    shard: u32,
    reader: ColdReader,
    deliver: impl Fn(TxnKey, Result<Option<Vec<u8>>, String>) -> bool + Send + 'static,
) -> Option<crossbeam_channel::Sender<TxnKey>> {
    let (keys, taken) = crossbeam_channel::bounded::<TxnKey>(PARKED_MAX);
    let started = std::thread::Builder::new()
        .name(format!("cold-read-{shard}"))
        .spawn(move || {
            for key in taken {
                // Every key gets an answer, or its request would wait for ever.
                let value = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reader(&key)))
                    .unwrap_or_else(|_| Err("the read panicked".to_owned()));
                if !deliver(key, value) {
                    break;
                }
            }
        });
    match started {
        Ok(_) => Some(keys),
        Err(error) => {
            tracing::warn!(
                shard,
                %error,
                "cannot start the thread that reads the store ahead: the shard reads on its own thread"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Kind, Outcome, Pan, Tokenizer};
    use crate::ledger::cold::ColdStore;
    use crate::ledger::shard::MemoryTier;
    use crate::ledger::{Account, ColdState, ColdTier, ShardImage, ShardLimits};

    const NOW: u64 = 1_795_703_415;
    const FIELD7: u64 = 1_126_143_015;
    const LIMITS: ShardLimits = ShardLimits {
        transactions_max: 10_000,
        hot_max: 4,
        hold_expiry_seconds: 400,
        reversal_window_seconds: 600,
    };

    /// What a read of the store gives.
    type Read = Result<Option<Vec<u8>>, String>;

    /// A small deterministic generator (xorshift), so that a failing seed repeats.
    struct Draw(u64);

    impl Draw {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    fn key(stan: u32) -> TxnKey {
        TxnKey {
            acquirer: 123_456,
            terminal: *b"TERM0001",
            stan,
            transmission: FIELD7,
        }
    }

    fn card(n: u64) -> crate::domain::CardToken {
        Tokenizer::new([7; 16]).token(&Pan::from_scheme("400000", n, 9).unwrap())
    }

    /// Request `stan` of a random kind, on one of two cards, naming earlier requests (some
    /// never approved) as originals.
    fn request(draw: &mut Draw, stan: u32) -> Posting {
        let kind = match draw.below(6) {
            0 | 1 => Kind::Authorization,
            2 => Kind::Purchase,
            3 => Kind::Completion,
            _ => Kind::Reversal,
        };
        let amount = 100 * (1 + draw.below(5));
        let original =
            (stan > 1).then(|| key(1 + u32::try_from(draw.below(u64::from(stan - 1))).unwrap()));
        let replacement =
            (kind == Kind::Reversal && draw.below(3) == 0).then(|| draw.below(amount));
        Posting {
            kind,
            card: card(1 + draw.below(2)),
            amount,
            currency: Some(840),
            key: key(stan),
            original: original.filter(|_| matches!(kind, Kind::Completion | Kind::Reversal)),
            replacement,
        }
    }

    fn sorted(mut image: ShardImage) -> ShardImage {
        image.transactions.sort_by_key(|(k, _)| k.stan);
        image.accounts.sort_by_key(|(c, _)| format!("{c:?}"));
        image.settlement.sort();
        image
    }

    /// A read waiting for delivery: its value if it was read when queued.
    type Queued = VecDeque<(TxnKey, Option<Read>)>;

    /// Applies the waiting requests whose turn has come, in order, to `live` and `reference`
    /// (with `apply`), queueing the reads a turn still needs.
    fn apply_ready(
        parked: &mut Parked<(u32, Posting)>,
        [live, reference]: [&mut LedgerShard; 2],
        now: u64,
        queued: &mut Queued,
        early_read: &dyn Fn(&TxnKey) -> Option<Read>,
        apply: &mut impl FnMut(&mut LedgerShard, &mut LedgerShard, &Posting, u64),
    ) {
        let mut read = |key| {
            queued.push_back((key, early_read(&key)));
            true
        };
        while let Some(((_, posting), keys)) = parked.next_ready(live, &mut read) {
            apply(live, reference, &posting, now);
            parked.applied(live, &keys);
        }
    }

    /// Requests of every kind about transactions on disk, with the reads ahead arriving at
    /// random moments (after writes that make some stale, with expiry between, with the read
    /// queue refusing some): each answer, and the whole state at the end, are what a shard
    /// reading on its own thread gives for the same requests in the order they were applied;
    /// and requests did wait while others passed them.
    #[test]
    fn requests_waiting_for_reads_ahead_decide_as_reads_in_place_would() {
        let dir = crate::testing::TempDir::new("fetch");
        let (mut waited, mut passed, mut stale_or_refused, mut popped) = (0, 0, 0, 0);
        for seed in 1..=24u64 {
            let _ = std::fs::remove_dir_all(&dir);
            let store = ColdStore::open(&dir, 100_000).unwrap();
            let tier = store.shard(0, &ColdState::default()).unwrap();
            let reader = tier.reader().unwrap();
            // A third of the seeds: holds and postings expire within a minute, so that expiry
            // takes transactions whose reads are on their way.
            let limits = if seed % 3 == 0 {
                ShardLimits {
                    hold_expiry_seconds: 30,
                    reversal_window_seconds: 45,
                    ..LIMITS
                }
            } else {
                LIMITS
            };
            let mut live = LedgerShard::new(0, limits).with_cold(Box::new(tier));
            let mut reference = LedgerShard::new(0, limits).with_cold(Box::<MemoryTier>::default());
            for shard in [&mut live, &mut reference] {
                shard.open_account(card(1), Account::new(1_000_000, 840));
                shard.open_account(card(2), Account::new(1_000_000, 840));
            }
            let mut draw = Draw(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            // Odd seeds: a queue of one, so that requests are applied before their reads
            // arrive, in order, when it is full.
            let max = if seed % 2 == 1 { 1 } else { PARKED_MAX };
            let mut parked: Parked<(u32, Posting)> = Parked::new(max);
            // Even seeds read the store when a read is queued (a value that may go stale while
            // it waits), odd ones when it is delivered (a reader behind the store's writes).
            let early = seed % 2 == 0;
            let early_read = |key: &TxnKey| early.then(|| reader(key));
            let mut queued: Queued = VecDeque::new();
            let mut now = NOW;
            let mut stan = 0u32;
            let mut applied = 0;
            let mut last_applied: HashMap<TxnKey, u32> = HashMap::new();
            let mut apply = |live: &mut LedgerShard,
                             reference: &mut LedgerShard,
                             posting: &Posting,
                             now: u64| {
                // Two requests about one transaction are applied in their order of arrival.
                for key in [Some(posting.key), posting.original].iter().flatten() {
                    let last = last_applied.insert(*key, posting.key.stan).unwrap_or(0);
                    assert!(
                        last < posting.key.stan,
                        "seed {seed}: {last} after {}",
                        posting.key.stan
                    );
                }
                let got: Outcome = live.apply(posting, now);
                let want = reference.apply(posting, now);
                assert_eq!(got, want, "seed {seed}, request {}", posting.key.stan);
                applied += 1;
            };
            for _ in 0..600 {
                match draw.below(10) {
                    0..=4 if stan < 300 => {
                        stan += 1;
                        let posting = request(&mut draw, stan);
                        let refuse = draw.below(10) == 0;
                        let mut read = |key| {
                            if refuse {
                                return false;
                            }
                            queued.push_back((key, early_read(&key)));
                            true
                        };
                        while parked.is_full() {
                            let ((_, posting), keys) = parked.pop_front().unwrap();
                            apply(&mut live, &mut reference, &posting, now);
                            parked.applied(&mut live, &keys);
                            popped += 1;
                        }
                        let before = parked.len();
                        match parked.admit(&mut live, posting, (stan, posting), &mut read) {
                            Some((_, posting)) => {
                                if before > 0 {
                                    passed += 1;
                                }
                                apply(&mut live, &mut reference, &posting, now);
                            }
                            None => waited += 1,
                        }
                        if refuse {
                            stale_or_refused += 1;
                        }
                    }
                    5..=7 => {
                        if let Some((key, value)) = queued.pop_front() {
                            let value = value.unwrap_or_else(|| reader(&key));
                            parked.arrived(&mut live, key, value);
                        }
                    }
                    8 => {
                        now += draw.below(60);
                        let step = live.expiry_step(now, 8, 8);
                        assert_eq!(live.expire_step(&step), reference.expire_step(&step));
                    }
                    // The store thread catches up: the shard's memory forgets the writes it
                    // made at the next change, and lookups go to the store (or what was read).
                    _ => live.cold_flush(),
                }
                apply_ready(
                    &mut parked,
                    [&mut live, &mut reference],
                    now,
                    &mut queued,
                    &early_read,
                    &mut apply,
                );
            }
            // The reads still queued arrive (some for requests applied meanwhile from a full
            // queue); everything waiting is applied.
            while let Some((key, value)) = queued.pop_front() {
                let value = value.unwrap_or_else(|| reader(&key));
                parked.arrived(&mut live, key, value);
                apply_ready(
                    &mut parked,
                    [&mut live, &mut reference],
                    now,
                    &mut queued,
                    &early_read,
                    &mut apply,
                );
            }
            assert!(parked.is_empty() && parked.reading() == 0, "seed {seed}");
            assert_eq!(applied, stan, "seed {seed}: every request applied once");
            assert!(
                seed % 3 == 0 || live.cold_state().count > 0,
                "seed {seed}: transactions on disk"
            );
            assert_eq!(live.total(), reference.total());
            assert_eq!(sorted(live.full_image()), sorted(reference.full_image()));
        }
        let _ = std::fs::remove_dir_all(&dir);
        assert!(waited > 100, "{waited} waited");
        assert!(passed > 20, "{passed} passed one waiting");
        assert!(stale_or_refused > 20, "{stale_or_refused}");
        assert!(popped > 20, "{popped} applied from a full queue");
    }
}
