//! Answers the idempotency table had to let go of before their retention ran out, on disk, so
//! that a retransmission within `limits.idempotency_retention_seconds` still gets its original
//! answer at any load (DESIGN §2.4; issue 9).
//!
//! The table in memory holds `limits.idempotency_entries_max` identities in two generations
//! (see [`super::idempotency`]). When the load fills a generation before a retention has passed,
//! the older generation cannot simply be dropped: its answers are younger than the retention.
//! Instead its answers are written here, as a *tier*: one fjall keyspace, written by bulk
//! ingestion of the answers sorted (no journal, no compaction), and a filter of the tier's
//! identities in memory, so that a request the archive does not hold (nearly every one) costs
//! a filter check per tier, not a read. A tier is deleted whole once every answer in it is past
//! the retention.
//!
//! The answers are copied out of the table first (about 64 bytes each, for a few seconds), so
//! that no lock of the table is held while the disk is written.
//!
//! **Derived and temporary.** Everything here was put in the table from the log (live, or by
//! recovery, which puts back the answers within the retention); the archive is emptied at
//! every start and refilled the same way. It is never synced.
//!
//! **Bounded.** At most `limits.idempotency_archive_entries_max` answers (the filters cost
//! 2–3 bytes each in memory; the answers about 64 bytes each on disk, before compression) in at
//! most [`TIERS_MAX`] tiers. A tier that would pass either bound pushes out the oldest, and the
//! sweep says how short the window became, as the table itself did before.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::{Context, bail};
use fjall::{Database, Keyspace, KeyspaceCreateOptions};

use crate::domain::hash::TableHasher;
use crate::domain::{Balances, Outcome, ResponseCode, TxnKey};
use crate::ledger::cold;

/// Tiers held at most: each costs every new request a filter check while there are any.
pub const TIERS_MAX: usize = 64;

/// How often a request the archive does not hold still reads it (once per tier that says
/// "maybe").
const FILTER_ERROR_RATE: f64 = 1e-3;

const KEY_BYTES: usize = 28;
const VALUE_BYTES: usize = 36;

/// The filter of one tier's identities, seeded at random like every table keyed by acquirers'
/// choices (it is never stored).
type TierFilter = qfilter::Filter<Box<[u8]>, TableHasher>;

/// The answers of one generation of the table, on disk. Deleted from disk when dropped: by the
/// archive's next change once it has let go of it and no lookup uses it any more, or when it
/// is never added.
pub struct Tier {
    db: Database,
    keyspace: Option<Keyspace>,
    filter: TierFilter,
    entries: u64,
    /// Every answer in it is past the retention from this time on.
    until_seconds: u64,
}

impl std::fmt::Debug for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tier")
            .field("entries", &self.entries)
            .field("until_seconds", &self.until_seconds)
            .finish_non_exhaustive()
    }
}

impl Tier {
    pub fn entries(&self) -> u64 {
        self.entries
    }
}

impl Drop for Tier {
    fn drop(&mut self) {
        if let Some(keyspace) = self.keyspace.take() {
            // fjall removes the files once the last handle to the keyspace is gone.
            if let Err(error) = self.db.delete_keyspace(keyspace) {
                tracing::warn!(%error, "cannot delete answers on disk; they stay until the next start");
            }
        }
    }
}

/// What adding a tier pushed out to stay within the bounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Answers forgotten before their retention ran out.
    pub entries: u64,
    /// For how long the oldest answer still held had been kept (when `entries` > 0).
    pub window_seconds: u64,
}

/// Answers copied out of the table, to be written as a tier.
#[derive(Debug)]
pub struct Answers(Vec<([u8; KEY_BYTES], [u8; VALUE_BYTES])>);

impl Answers {
    /// Copies what `entries` yields (about `count` answers); an error when `cancel` is set.
    pub fn copy(
        entries: impl Iterator<Item = (TxnKey, u64, Outcome)>,
        count: u64,
        cancel: &AtomicBool,
    ) -> anyhow::Result<Answers> {
        let mut answers = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        for (key, fingerprint, outcome) in entries {
            if cancel.load(Ordering::Relaxed) {
                bail!("cancelled");
            }
            answers.push((cold::txn_key(&key), encode_value(fingerprint, &outcome)));
        }
        Ok(Answers(answers))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The tiers, oldest first, and the answers they hold.
#[derive(Default)]
struct Tiers {
    list: Vec<Arc<Tier>>,
    entries: u64,
}

pub struct AnswerArchive {
    db: Database,
    dir: PathBuf,
    /// Replaced whole by a change (rare), so that a lookup holds the lock only to clone the
    /// `Arc`, never across a read from disk.
    tiers: RwLock<Arc<Tiers>>,
    /// How many tiers there are, read without the lock by every new request.
    tier_count: AtomicUsize,
    /// Tiers let go of, kept until no lookup's copy of the list holds them: then dropped (so
    /// deleted from disk) by the next `add` or `expire`, on the thread that sweeps, never on a
    /// request's thread that happened to hold the last copy.
    retired: Mutex<Vec<Arc<Tier>>>,
    entries_max: u64,
    next_keyspace: AtomicU64,
}

impl std::fmt::Debug for AnswerArchive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerArchive")
            .field("dir", &self.dir)
            .field("tiers", &self.tier_count.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn encode_value(fingerprint: u64, outcome: &Outcome) -> [u8; VALUE_BYTES] {
    let mut out = [0u8; VALUE_BYTES];
    out[0..8].copy_from_slice(&fingerprint.to_be_bytes());
    out[8..10].copy_from_slice(outcome.code.as_bytes());
    if let Some(auth_id) = outcome.auth_id {
        out[10] = 1;
        out[11..17].copy_from_slice(&auth_id);
    }
    if let Some(b) = outcome.balances {
        out[17] = 1;
        out[18..26].copy_from_slice(&b.ledger.to_be_bytes());
        out[26..34].copy_from_slice(&b.available.to_be_bytes());
        out[34..36].copy_from_slice(&b.currency.to_be_bytes());
    }
    out
}

fn decode_value(bytes: &[u8]) -> Option<(u64, Outcome)> {
    let bytes: &[u8; VALUE_BYTES] = bytes.try_into().ok()?;
    let at = |from: usize| -> [u8; 8] {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[from..from + 8]);
        b
    };
    let code = ResponseCode::from_bytes([bytes[8], bytes[9]])?;
    let auth_id = (bytes[10] == 1).then(|| {
        let mut id = [0u8; 6];
        id.copy_from_slice(&bytes[11..17]);
        id
    });
    let balances = (bytes[17] == 1).then(|| Balances {
        ledger: i64::from_be_bytes(at(18)),
        available: i64::from_be_bytes(at(26)),
        currency: u16::from_be_bytes([bytes[34], bytes[35]]),
    });
    Some((
        u64::from_be_bytes(at(0)),
        Outcome {
            code,
            auth_id,
            balances,
        },
    ))
}

/// Whether the archive can run on this CPU (its filters need popcnt and bmi2).
pub fn supported() -> bool {
    cold::filter_supported()
}

impl AnswerArchive {
    /// Empties `dir` (only if it holds an archive or nothing) and creates the archive in it,
    /// for at most `entries_max` answers.
    pub fn create(dir: &Path, entries_max: u64) -> anyhow::Result<Arc<AnswerArchive>> {
        if !supported() {
            bail!("this CPU lacks popcnt or bmi2, which the filters of the answers on disk need");
        }
        cold::empty_store_dir(dir, "answers on disk")?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let db = Database::builder(dir)
            // Nothing here need survive a crash: the journal is never synced, and bulk
            // ingestion does not write it.
            .manual_journal_persist(true)
            .max_journaling_size(64 * 1024 * 1024)
            .worker_threads(1)
            .cache_size(16 * 1024 * 1024)
            .open()
            .with_context(|| format!("cannot open the answers on disk in {}", dir.display()))?;
        // As the store's (crate::ledger::cold::ColdStore::open): a step below the request path.
        crate::threads::lower_threads_named("fjall:worker", crate::threads::DEFERRABLE_NICE);
        Ok(Arc::new(AnswerArchive {
            db,
            dir: dir.to_owned(),
            tiers: RwLock::new(Arc::default()),
            tier_count: AtomicUsize::new(0),
            retired: Mutex::new(Vec::new()),
            entries_max,
            next_keyspace: AtomicU64::new(0),
        }))
    }

    /// What decides whether the archive slows or halts its writes, and its size on disk (the
    /// `switch_store_*{store="answers"}` gauges).
    pub fn health(&self) -> crate::ops::metrics::StoreHealth {
        let tiers = self.tiers.read().unwrap_or_else(|e| e.into_inner()).clone();
        crate::ops::metrics::StoreHealth::of(
            &self.db,
            tiers.list.iter().filter_map(|tier| tier.keyspace.as_ref()),
        )
    }

    /// Removes an archive left in `dir` by an earlier start, when this one keeps none.
    pub fn remove(dir: &Path) -> anyhow::Result<()> {
        cold::empty_store_dir(dir, "answers on disk")?;
        match std::fs::remove_dir(dir) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(error).with_context(|| format!("cannot remove {}", dir.display()))
            }
            _ => Ok(()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tier_count.load(Ordering::Acquire) == 0
    }

    fn tiers(&self) -> Arc<Tiers> {
        self.tiers.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Answers held.
    pub fn len(&self) -> u64 {
        self.tiers().entries
    }

    /// The answer held for `key`, if any: the request's fingerprint and its outcome, from the
    /// newest tier that has it. An error means the disk could not be read.
    pub fn find(&self, key: &TxnKey) -> anyhow::Result<Option<(u64, Outcome)>> {
        let bytes = cold::txn_key(key);
        for tier in self.tiers().list.iter().rev() {
            if !tier.filter.contains(&bytes[..]) {
                continue;
            }
            if let Some(keyspace) = &tier.keyspace
                && let Some(value) = keyspace.get(bytes)?
            {
                let found = decode_value(&value).context("an answer on disk does not decode")?;
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Writes the answers `entries` yields (about `count` of them) as a tier that lasts until
    /// `until_seconds`; an identity yielded twice keeps one of its answers. Takes them all in
    /// first (so `entries` may hold locks: they are released before the disk is written), and
    /// stops early with an error when `cancel` is set.
    pub fn write_tier(
        &self,
        entries: impl Iterator<Item = (TxnKey, u64, Outcome)>,
        count: u64,
        until_seconds: u64,
        cancel: &AtomicBool,
    ) -> anyhow::Result<Tier> {
        let answers = Answers::copy(entries, count, cancel)?;
        self.write_answers(answers, until_seconds, cancel)
    }

    /// [`AnswerArchive::write_tier`] of answers already copied.
    pub fn write_answers(
        &self,
        answers: Answers,
        until_seconds: u64,
        cancel: &AtomicBool,
    ) -> anyhow::Result<Tier> {
        let mut answers = answers.0;
        answers.sort_unstable_by_key(|a| a.0);
        // Ingestion wants keys strictly rising.
        answers.dedup_by(|a, b| a.0 == b.0);
        let mut tier = Tier {
            db: self.db.clone(),
            keyspace: None,
            filter: TierFilter::new_with_hasher(
                (answers.len() as u64).max(1),
                FILTER_ERROR_RATE,
                TableHasher::default(),
            )
            .map_err(|e| {
                anyhow::anyhow!("cannot make a filter for {} answers: {e:?}", answers.len())
            })?,
            entries: 0,
            until_seconds,
        };
        if answers.is_empty() {
            return Ok(tier);
        }
        let name = format!(
            "tier-{}",
            self.next_keyspace.fetch_add(1, Ordering::Relaxed)
        );
        let keyspace = self
            .db
            .keyspace(&name, KeyspaceCreateOptions::default)
            .with_context(|| format!("cannot create keyspace {name} of the answers on disk"))?;
        // Kept before writing, so that a failure deletes it too (on drop).
        tier.keyspace = Some(keyspace.clone());
        let mut ingestion = keyspace.start_ingestion()?;
        for (key, value) in answers {
            if cancel.load(Ordering::Relaxed) {
                bail!("cancelled");
            }
            tier.filter
                .insert_duplicated(&key[..])
                .map_err(|e| anyhow::anyhow!("the filter of the answers on disk is full: {e:?}"))?;
            ingestion.write(key.to_vec(), value.to_vec())?;
            tier.entries += 1;
        }
        ingestion.finish()?;
        Ok(tier)
    }

    /// Makes `tier` findable, newest (an empty one is dropped). Past either bound, the oldest
    /// tiers go first; what they held is forgotten early, as `Pushed` says (`now_seconds`, to
    /// say how early).
    pub fn add(&self, tier: Tier, now_seconds: u64, retention_seconds: u64) -> Pushed {
        let mut pushed = Pushed::default();
        if tier.entries == 0 {
            return pushed;
        }
        let mut gone = Vec::new();
        {
            let mut tiers = self.tiers.write().unwrap_or_else(|e| e.into_inner());
            let mut list = tiers.list.clone();
            let mut entries = tiers.entries + tier.entries;
            while !list.is_empty() && (entries > self.entries_max || list.len() >= TIERS_MAX) {
                let oldest = list.remove(0);
                entries -= oldest.entries;
                pushed.entries += oldest.entries;
                gone.push(oldest);
            }
            if pushed.entries > 0 {
                // The oldest tier still held lasts until `until`: its answers are at least
                // `retention - (until - now)` old, and older ones are gone.
                let until = list.first().map_or(tier.until_seconds, |t| t.until_seconds);
                pushed.window_seconds =
                    retention_seconds.saturating_sub(until.saturating_sub(now_seconds));
            }
            list.push(Arc::new(tier));
            self.tier_count.store(list.len(), Ordering::Release);
            *tiers = Arc::new(Tiers { list, entries });
        }
        self.retire(gone);
        pushed
    }

    /// Keeps `gone` until no lookup uses it, and deletes what no lookup uses any more. A lookup
    /// holds a copy of the list (`Arc<Tiers>`), never a tier alone, and new copies no longer
    /// hold a retired tier: one held here only stays so.
    fn retire(&self, gone: Vec<Arc<Tier>>) {
        let unused: Vec<Arc<Tier>> = {
            let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
            retired.extend(gone);
            let (unused, used) = std::mem::take(&mut *retired)
                .into_iter()
                .partition(|t| Arc::strong_count(t) == 1);
            *retired = used;
            unused
        };
        // Deleted from disk here, outside the lock.
        drop(unused);
    }

    /// Tiers let go of that a lookup still uses.
    #[cfg(test)]
    fn retired(&self) -> usize {
        self.retired.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Lets go of the tiers whose answers are all past the retention at `now_seconds`;
    /// returns how many answers went.
    pub fn expire(&self, now_seconds: u64) -> u64 {
        if self.is_empty() {
            self.retire(Vec::new());
            return 0;
        }
        let gone: Vec<Arc<Tier>> = {
            let mut tiers = self.tiers.write().unwrap_or_else(|e| e.into_inner());
            if tiers.list.iter().all(|t| t.until_seconds > now_seconds) {
                drop(tiers);
                self.retire(Vec::new());
                return 0;
            }
            let (gone, list): (Vec<_>, Vec<_>) = tiers
                .list
                .iter()
                .cloned()
                .partition(|t| t.until_seconds <= now_seconds);
            let entries = list.iter().map(|t| t.entries).sum();
            self.tier_count.store(list.len(), Ordering::Release);
            *tiers = Arc::new(Tiers { list, entries });
            gone
        };
        let entries = gone.iter().map(|t| t.entries).sum();
        self.retire(gone);
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TempDir;

    fn key(stan: u32) -> TxnKey {
        TxnKey {
            acquirer: 123_456,
            terminal: *b"TERM0001",
            stan,
            transmission: 1_126_143_015,
        }
    }

    fn approved(n: u32) -> Outcome {
        Outcome {
            code: ResponseCode::Approved,
            auth_id: Some(*format!("{n:06}").as_bytes().first_chunk().unwrap()),
            balances: None,
        }
    }

    fn tier_of(archive: &AnswerArchive, stans: std::ops::Range<u32>, until: u64) -> Tier {
        let count = u64::from(stans.end - stans.start);
        archive
            .write_tier(
                stans.map(|s| (key(s), u64::from(s) * 7, approved(s))),
                count,
                until,
                &AtomicBool::new(false),
            )
            .unwrap()
    }

    #[test]
    fn an_outcome_reads_back_as_written() {
        let outcomes = [
            approved(42),
            Outcome::decline(ResponseCode::InsufficientFunds),
            Outcome {
                code: ResponseCode::Approved,
                auth_id: Some(*b"A1B2C3"),
                balances: Some(Balances {
                    ledger: -5,
                    available: i64::MIN,
                    currency: 978,
                }),
            },
            Outcome {
                code: ResponseCode::Approved,
                auth_id: None,
                balances: Some(Balances {
                    ledger: i64::MAX,
                    available: 0,
                    currency: 840,
                }),
            },
        ];
        for outcome in outcomes {
            let value = encode_value(u64::MAX - 3, &outcome);
            assert_eq!(decode_value(&value), Some((u64::MAX - 3, outcome)));
        }
        assert_eq!(decode_value(&[0; VALUE_BYTES - 1]), None, "short");
        let mut unknown = encode_value(1, &approved(1));
        unknown[8..10].copy_from_slice(b"!!");
        assert_eq!(decode_value(&unknown), None, "no such response code");
    }

    #[test]
    fn a_tier_finds_every_answer_and_nothing_else_until_it_expires() {
        let dir = TempDir::new("archive-tier");
        let archive = AnswerArchive::create(dir.path(), 1_000).unwrap();
        let tier = tier_of(&archive, 0..10, 100);
        assert_eq!(tier.entries(), 10);
        assert!(archive.is_empty());
        assert_eq!(archive.find(&key(0)).unwrap(), None, "not added yet");
        assert_eq!(archive.add(tier, 0, 300), Pushed::default());
        assert_eq!(archive.len(), 10);
        for s in 0..10 {
            assert_eq!(
                archive.find(&key(s)).unwrap(),
                Some((u64::from(s) * 7, approved(s))),
                "{s}"
            );
        }
        for s in 10..5_000 {
            assert_eq!(archive.find(&key(s)).unwrap(), None, "{s}");
        }
        assert_eq!(archive.expire(99), 0);
        assert!(archive.find(&key(3)).unwrap().is_some());
        assert_eq!(archive.expire(100), 10);
        assert!(archive.is_empty());
        assert_eq!(archive.len(), 0);
        assert_eq!(archive.find(&key(3)).unwrap(), None);
        assert_eq!(archive.db.keyspace_count(), 0, "deleted from disk");
    }

    /// A lookup that still holds the list when a tier expires never deletes it itself: the
    /// tier waits until the lookup is done, and the next sweep deletes it.
    #[test]
    fn a_tier_in_use_by_a_lookup_is_deleted_by_the_sweep_after_it() {
        let dir = TempDir::new("archive-retired");
        let archive = AnswerArchive::create(dir.path(), 1_000).unwrap();
        archive.add(tier_of(&archive, 0..10, 100), 0, 300);
        archive.add(tier_of(&archive, 10..20, 200), 0, 300);
        let lookup = archive.tiers();
        assert_eq!(archive.expire(100), 10);
        assert_eq!(archive.retired(), 1);
        assert_eq!(archive.db.keyspace_count(), 2, "still in use");
        assert_eq!(archive.find(&key(3)).unwrap(), None, "not found any more");
        drop(lookup);
        assert_eq!(
            archive.db.keyspace_count(),
            2,
            "the lookup did not delete it"
        );
        assert_eq!(archive.expire(101), 0);
        assert_eq!(archive.retired(), 0);
        assert_eq!(archive.db.keyspace_count(), 1, "deleted by the next sweep");
        // The same when the list becomes empty, and when a new tier pushes one out.
        let lookup = archive.tiers();
        assert_eq!(archive.expire(200), 10);
        drop(lookup);
        assert_eq!(archive.db.keyspace_count(), 1);
        assert_eq!(archive.expire(201), 0);
        assert_eq!(archive.db.keyspace_count(), 0);
        let small = AnswerArchive::create(&dir.path().join("small"), 10).unwrap();
        small.add(tier_of(&small, 0..10, 100), 0, 300);
        let lookup = small.tiers();
        assert_eq!(small.add(tier_of(&small, 10..20, 100), 0, 300).entries, 10);
        assert_eq!(small.db.keyspace_count(), 2);
        drop(lookup);
        small.expire(1);
        assert_eq!(small.db.keyspace_count(), 1);
        assert!(small.find(&key(15)).unwrap().is_some());
    }

    #[test]
    fn a_tier_not_added_or_empty_leaves_nothing() {
        let dir = TempDir::new("archive-dropped");
        let archive = AnswerArchive::create(dir.path(), 1_000).unwrap();
        let tier = tier_of(&archive, 0..10, 100);
        assert_eq!(archive.db.keyspace_count(), 1);
        drop(tier);
        assert_eq!(archive.db.keyspace_count(), 0);
        let empty = tier_of(&archive, 0..0, 100);
        assert_eq!(archive.add(empty, 0, 300), Pushed::default());
        assert!(archive.is_empty());
    }

    #[test]
    fn past_the_most_tiers_the_oldest_goes() {
        let dir = TempDir::new("archive-tiers");
        let archive = AnswerArchive::create(dir.path(), 1_000_000).unwrap();
        for s in 0..u32::try_from(TIERS_MAX).unwrap() {
            let tier = tier_of(&archive, s..s + 1, 1_000 + u64::from(s));
            assert_eq!(archive.add(tier, 0, 300), Pushed::default());
        }
        let tier = tier_of(&archive, 999..1_000, 2_000);
        assert_eq!(archive.add(tier, 900, 300).entries, 1);
        assert_eq!(archive.len(), TIERS_MAX as u64);
        assert_eq!(archive.find(&key(0)).unwrap(), None);
        assert!(archive.find(&key(1)).unwrap().is_some());
        assert!(archive.find(&key(999)).unwrap().is_some());
    }

    #[test]
    fn a_cancelled_tier_is_an_error_and_leaves_nothing() {
        let dir = TempDir::new("archive-cancel");
        let archive = AnswerArchive::create(dir.path(), 1_000).unwrap();
        let cancel = AtomicBool::new(false);
        let entries = (0..10).map(|s| {
            if s == 5 {
                cancel.store(true, Ordering::Relaxed);
            }
            (key(s), 1, approved(s))
        });
        assert!(archive.write_tier(entries, 10, 100, &cancel).is_err());
        assert!(archive.is_empty());
        // Nothing was left on disk.
        assert_eq!(
            archive.db.keyspace_count(),
            0,
            "{:?}",
            archive.db.list_keyspace_names()
        );
    }

    #[test]
    fn past_its_bound_the_oldest_tier_goes_and_the_newest_answer_wins() {
        let dir = TempDir::new("archive-bound");
        let archive = AnswerArchive::create(dir.path(), 10).unwrap();
        assert_eq!(
            archive.add(tier_of(&archive, 0..6, 100), 0, 300),
            Pushed::default()
        );
        // 3..9 again, with other answers: the newer tier's are found.
        let newer = archive
            .write_tier(
                (3..9).map(|s| {
                    (
                        key(s),
                        1,
                        Outcome::decline(ResponseCode::DuplicateTransmission),
                    )
                }),
                6,
                150,
                &AtomicBool::new(false),
            )
            .unwrap();
        let pushed = archive.add(newer, 50, 300);
        assert_eq!(
            pushed,
            Pushed {
                entries: 6,
                window_seconds: 200
            }
        );
        assert_eq!(archive.len(), 6);
        for s in 0..3 {
            assert_eq!(archive.find(&key(s)).unwrap(), None, "{s}");
        }
        for s in 3..9 {
            assert_eq!(
                archive.find(&key(s)).unwrap(),
                Some((1, Outcome::decline(ResponseCode::DuplicateTransmission))),
                "{s}"
            );
        }
        // Within the bound, both stay and the newest answer wins.
        let dir = TempDir::new("archive-newest");
        let archive = AnswerArchive::create(dir.path(), 100).unwrap();
        archive.add(tier_of(&archive, 0..6, 100), 0, 300);
        let newer = archive
            .write_tier(
                std::iter::once((key(2), 9, approved(99))),
                1,
                150,
                &AtomicBool::new(false),
            )
            .unwrap();
        assert_eq!(archive.add(newer, 50, 300), Pushed::default());
        assert_eq!(archive.find(&key(2)).unwrap(), Some((9, approved(99))));
        assert_eq!(archive.find(&key(1)).unwrap(), Some((7, approved(1))));
    }

    #[test]
    fn a_start_refuses_a_directory_of_other_files() {
        let dir = TempDir::new("archive-foreign");
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        let error = AnswerArchive::create(dir.path(), 10).unwrap_err();
        assert!(
            format!("{error:#}").contains("not answers on disk"),
            "{error:#}"
        );
        assert!(dir.path().join("notes.txt").exists());
        // What fjall makes before its `version` file (a start cut short) is emptied.
        let dir = TempDir::new("archive-cut-short");
        std::fs::write(dir.path().join("lock"), "").unwrap();
        std::fs::write(dir.path().join("0.jnl"), "partial").unwrap();
        std::fs::create_dir(dir.path().join("keyspaces")).unwrap();
        let archive = AnswerArchive::create(dir.path(), 10).unwrap();
        assert!(archive.is_empty());
        assert!(dir.path().join("version").exists());
        drop(archive);
        // A start that keeps no archive removes it.
        AnswerArchive::remove(dir.path()).unwrap();
        assert!(!dir.path().exists());
        AnswerArchive::remove(dir.path()).unwrap();
    }
}
