//! The ledger's transactions beyond the hot window, on disk: a [`ColdTier`] on fjall, an
//! embedded LSM tree, in `{wal.dir}/cold`.
//!
//! **Derived state; the WAL stays the truth.** Each shard has three keyspaces: its
//! transactions (key → record), the older part of its two queues by age (queue and sequence
//! number → due time and key), and an undo log: every change (one request, one expiry step)
//! is one atomic write batch holding the change and, under the change's version, what each
//! key it wrote held before (a spill's too: a key spilled after a snapshot may have been on
//! disk at the snapshot, taken by expiry since and reused, so only the undo log knows what it
//! held). A snapshot records each shard's version (in [`ColdState`]);
//! recovery rolls the store back to that version, newest change first, and replays the log
//! after the snapshot, which makes the same changes again. So the store never needs to be
//! durable with the log, only at a snapshot: the snapshotter syncs it before writing the
//! snapshot file, then forgets the undo entries the snapshot made unneeded.
//!
//! A failed read or write is kept as the tier's failure (reads then find nothing); the shard's
//! owner answers 96 and stops the process, and recovery rebuilds from the snapshot and the
//! log.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::shard::{ColdState, ColdTier, Queue, Record, ShardImage};
use crate::domain::TxnKey;
use crate::wal::format;

/// The keyspaces a write lands in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Space {
    Transactions = 0,
    Ages = 1,
}

const KEY_BYTES: usize = 28;

fn txn_key(key: &TxnKey) -> [u8; KEY_BYTES] {
    let mut out = [0u8; KEY_BYTES];
    out[0..8].copy_from_slice(&key.acquirer.to_be_bytes());
    out[8..16].copy_from_slice(&key.terminal);
    out[16..20].copy_from_slice(&key.stan.to_be_bytes());
    out[20..28].copy_from_slice(&key.transmission.to_be_bytes());
    out
}

fn txn_key_from(bytes: &[u8]) -> Option<TxnKey> {
    let bytes: &[u8; KEY_BYTES] = bytes.try_into().ok()?;
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_be_bytes(b)
    };
    let mut terminal = [0u8; 8];
    terminal.copy_from_slice(&bytes[8..16]);
    let mut stan = [0u8; 4];
    stan.copy_from_slice(&bytes[16..20]);
    Some(TxnKey {
        acquirer: u64_at(0),
        terminal,
        stan: u32::from_be_bytes(stan),
        transmission: u64_at(20),
    })
}

fn age_key(queue: Queue, seq: u64) -> [u8; 9] {
    let mut out = [0u8; 9];
    out[0] = match queue {
        Queue::Holds => 0,
        Queue::Postings => 1,
    };
    out[1..9].copy_from_slice(&seq.to_be_bytes());
    out
}

fn age_value(due: u64, key: &TxnKey) -> [u8; 8 + KEY_BYTES] {
    let mut out = [0u8; 8 + KEY_BYTES];
    out[0..8].copy_from_slice(&due.to_be_bytes());
    out[8..].copy_from_slice(&txn_key(key));
    out
}

fn age_from(bytes: &[u8]) -> Option<(u64, TxnKey)> {
    if bytes.len() != 8 + KEY_BYTES {
        return None;
    }
    let mut due = [0u8; 8];
    due.copy_from_slice(&bytes[0..8]);
    Some((u64::from_be_bytes(due), txn_key_from(&bytes[8..])?))
}

/// A key a change wrote, and what it held before (`None`: nothing).
type UndoItem = (Space, Vec<u8>, Option<Vec<u8>>);

/// A change's write to a key: the new value (`None`: removed) and what it held before.
type PendingWrite = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Appends one item to a change's undo entry: a key the change wrote, and what it held before.
fn append_undo(out: &mut Vec<u8>, space: Space, key: &[u8], old: Option<&[u8]>) {
    out.push(space as u8);
    out.push(u8::try_from(key.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(key);
    match old {
        Some(old) => {
            out.push(1);
            out.extend_from_slice(&u16::try_from(old.len()).unwrap_or(u16::MAX).to_be_bytes());
            out.extend_from_slice(old);
        }
        None => out.push(0),
    }
}

fn decode_undo(mut bytes: &[u8]) -> Option<Vec<UndoItem>> {
    let mut items = Vec::new();
    while let [space, len, rest @ ..] = bytes {
        let space = match space {
            0 => Space::Transactions,
            1 => Space::Ages,
            _ => return None,
        };
        let key = rest.get(..usize::from(*len))?.to_vec();
        let rest = rest.get(usize::from(*len)..)?;
        let (old, rest) = match rest {
            [0, rest @ ..] => (None, rest),
            [1, a, b, rest @ ..] => {
                let n = usize::from(u16::from_be_bytes([*a, *b]));
                (Some(rest.get(..n)?.to_vec()), rest.get(n..)?)
            }
            _ => return None,
        };
        items.push((space, key, old));
        bytes = rest;
    }
    bytes.is_empty().then_some(items)
}

fn version_key(kind: &str, shard: u32) -> String {
    format!("{kind}/{shard}")
}

fn u64_value(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// The store of every shard: one fjall database.
pub struct ColdStore {
    db: Database,
    /// Per shard: the version of its last committed change (`version/N`), and the oldest
    /// version its undo log can still go back to (`floor/N`).
    meta: Keyspace,
    dir: PathBuf,
    /// Serializes clearing against opening shards (recovery only).
    lock: Mutex<()>,
}

impl std::fmt::Debug for ColdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ColdStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// fjall's defaults (64 MiB memtables). Smaller ones (16 MiB), and syncing the journal every
/// 200 ms from a background thread, did not shorten the stalls (bench/RESULTS.md).
fn options() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default()
}

impl ColdStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<Arc<ColdStore>> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let db = Database::builder(dir)
            // Flushes and compactions on two threads (fjall's default on this machine), so that
            // a flush need not wait for a compaction.
            .worker_threads(2)
            // Made durable at snapshots (see the module): not at every change.
            .manual_journal_persist(true)
            .cache_size(64 * 1024 * 1024)
            .open()
            .with_context(|| {
                format!("cannot open the transactions on disk in {}", dir.display())
            })?;
        let meta = db
            .keyspace("meta", options)
            .context("cannot open the store's meta keyspace")?;
        Ok(Arc::new(ColdStore {
            db,
            meta,
            dir: dir.to_owned(),
            lock: Mutex::new(()),
        }))
    }

    fn keyspaces(&self, shard: u32) -> anyhow::Result<[Keyspace; 3]> {
        let open = |name: &str| {
            self.db
                .keyspace(&format!("{name}-{shard}"), options)
                .with_context(|| format!("cannot open keyspace {name}-{shard}"))
        };
        Ok([open("txn")?, open("age")?, open("undo")?])
    }

    fn meta_u64(&self, kind: &str, shard: u32) -> anyhow::Result<u64> {
        Ok(self
            .meta
            .get(version_key(kind, shard))?
            .and_then(|v| u64_value(&v))
            .unwrap_or(0))
    }

    /// Shard `shard`'s tier, rolled back to `state.version` (from its snapshot; 0 without one,
    /// which empties it): the state the log after that snapshot was written on.
    pub fn shard(self: &Arc<Self>, shard: u32, state: &ColdState) -> anyhow::Result<DiskTier> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let [txns, ages, undo] = self.keyspaces(shard)?;
        let target = state.version;
        let stored = self.meta_u64("version", shard)?;
        let dir = self.dir.display();
        if target == 0 {
            txns.clear()?;
            ages.clear()?;
            undo.clear()?;
        } else {
            if stored < target {
                bail!(
                    "the transactions on disk in {dir} are behind the snapshot (shard {shard}: version {stored}, the \
                     snapshot needs {target}): the store lost writes it had made durable. It cannot be rebuilt from a \
                     log pruned behind the snapshot; restore {dir} from a backup taken with the WAL directory"
                );
            }
            let floor = self.meta_u64("floor", shard)?;
            if target < floor {
                bail!(
                    "the transactions on disk in {dir} cannot go back to the snapshot's version {target} (shard {shard}: \
                     undo kept from {floor} on): an older snapshot than the store was last settled with. Restore \
                     {dir} from a backup taken with the WAL directory"
                );
            }
            // Newest first, one entry at a time (each holds what its keys held before it), each
            // undone in one batch with the version it leaves: a rollback cut short by a crash
            // resumes where it stopped. One iterator going down: each entry removed is behind
            // it, so none is met again (a new iterator per entry would skip every removed one,
            // quadratic in the changes since the snapshot).
            for guard in undo.range(((target + 1).to_be_bytes())..).rev() {
                let (key, value) = guard.into_inner()?;
                let version = u64_value(&key).context("an undo key of the wrong size")?;
                let items = decode_undo(&value)
                    .with_context(|| format!("the undo entry of version {version} is damaged"))?;
                let mut batch = self.db.batch();
                for (space, key, old) in items {
                    let keyspace = match space {
                        Space::Transactions => &txns,
                        Space::Ages => &ages,
                    };
                    match old {
                        Some(old) => batch.insert(keyspace, key, old),
                        None => batch.remove(keyspace, key),
                    }
                }
                batch.remove(&undo, version.to_be_bytes());
                batch.insert(
                    &self.meta,
                    version_key("version", shard),
                    (version - 1).to_be_bytes(),
                );
                batch.commit()?;
            }
        }
        let mut batch = self.db.batch();
        batch.insert(
            &self.meta,
            version_key("version", shard),
            target.to_be_bytes(),
        );
        if target == 0 {
            batch.insert(&self.meta, version_key("floor", shard), 0u64.to_be_bytes());
        }
        batch.commit()?;
        self.db.persist(PersistMode::SyncAll)?;
        Ok(DiskTier {
            store: self.clone(),
            shard,
            txns,
            ages,
            undo,
            pending: HashMap::new(),
            failure: Arc::new(Mutex::new(None)),
        })
    }

    /// Empties every shard's part (a new split of the shards starts from nothing on disk).
    pub fn clear(&self) -> anyhow::Result<()> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        for name in self.db.list_keyspace_names() {
            let name: &str = &name;
            if name == "meta" {
                continue;
            }
            self.db.keyspace(name, options)?.clear()?;
        }
        self.meta.clear()?;
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    /// Syncs every change made so far: before a snapshot that counts on them is written.
    pub fn persist(&self) -> anyhow::Result<()> {
        self.db
            .persist(PersistMode::SyncAll)
            .context("cannot sync the transactions on disk")
    }

    /// After a snapshot of `images` is durable: what recovery could need to undo only goes
    /// back to it, so older undo entries are removed.
    pub fn settle(&self, images: &[&ShardImage]) -> anyhow::Result<()> {
        for (shard, image) in images.iter().enumerate() {
            let shard = u32::try_from(shard).unwrap_or(u32::MAX);
            let version = image.cold.version;
            let undo = self.db.keyspace(&format!("undo-{shard}"), options)?;
            let mut batch = self.db.batch();
            batch.insert(
                &self.meta,
                version_key("floor", shard),
                version.to_be_bytes(),
            );
            batch.commit()?;
            let mut batch = self.db.batch();
            for guard in undo.range(..=version.to_be_bytes()) {
                let key = guard.key()?;
                batch.remove(&undo, key);
                if batch.len() >= 4_096 {
                    batch.commit()?;
                    batch = self.db.batch();
                }
            }
            batch.commit()?;
        }
        Ok(())
    }
}

/// One shard's part of the store.
pub struct DiskTier {
    store: Arc<ColdStore>,
    shard: u32,
    txns: Keyspace,
    ages: Keyspace,
    undo: Keyspace,
    /// This change's writes: (space, key) → (new value, value before the change).
    pending: HashMap<(Space, Vec<u8>), PendingWrite>,
    failure: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for DiskTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskTier")
            .field("shard", &self.shard)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl DiskTier {
    fn fail(&self, what: &str, error: impl std::fmt::Display) {
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if failure.is_none() {
            *failure = Some(format!(
                "the transactions on disk ({}, shard {}) failed: {what}: {error}",
                self.store.dir.display(),
                self.shard
            ));
        }
    }

    fn keyspace(&self, space: Space) -> &Keyspace {
        match space {
            Space::Transactions => &self.txns,
            Space::Ages => &self.ages,
        }
    }

    /// What `key` holds now: this change's write, else the store's.
    fn read(&self, space: Space, key: &[u8]) -> Option<Vec<u8>> {
        if !self.pending.is_empty()
            && let Some((new, _)) = self.pending.get(&(space, key.to_vec()))
        {
            return new.clone();
        }
        match self.keyspace(space).get(key) {
            Ok(value) => value.map(|v| v.to_vec()),
            Err(error) => {
                self.fail("a read", error);
                None
            }
        }
    }

    /// Writes `value` (or removes) under `key`; returns what the key held.
    fn write(&mut self, space: Space, key: &[u8], value: Option<Vec<u8>>) -> Option<Vec<u8>> {
        let before = self.read(space, key);
        self.record(space, key.to_vec(), value, || before.clone());
        before
    }

    /// Gathers a write into this change; `before` gives what the key held, asked for only at
    /// the change's first write of that key (the undo entry restores the state before it).
    fn record(
        &mut self,
        space: Space,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        before: impl FnOnce() -> Option<Vec<u8>>,
    ) {
        match self.pending.entry((space, key)) {
            std::collections::hash_map::Entry::Occupied(mut slot) => slot.get_mut().0 = value,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert((value, before()));
            }
        }
    }
}

impl ColdTier for DiskTier {
    fn get(&self, key: &TxnKey) -> Option<Record> {
        let bytes = self.read(Space::Transactions, &txn_key(key))?;
        match format::decode_transaction(&bytes) {
            Ok(record) => Some(record),
            Err(error) => {
                self.fail("a stored transaction does not decode", error);
                None
            }
        }
    }

    fn put(&mut self, key: &TxnKey, record: &Record) {
        let mut value = Vec::with_capacity(64);
        format::encode_transaction(record, &mut value);
        self.write(Space::Transactions, &txn_key(key), Some(value));
    }

    fn remove(&mut self, key: &TxnKey) -> Option<Record> {
        let before = self.write(Space::Transactions, &txn_key(key), None)?;
        match format::decode_transaction(&before) {
            Ok(record) => Some(record),
            Err(error) => {
                self.fail("a stored transaction does not decode", error);
                None
            }
        }
    }

    fn insert_new(&mut self, key: &TxnKey, record: &Record) {
        let mut value = Vec::with_capacity(64);
        format::encode_transaction(record, &mut value);
        // Absent by the caller's word: nothing to read before it, and undone by removing it.
        self.record(
            Space::Transactions,
            txn_key(key).to_vec(),
            Some(value),
            || None,
        );
    }

    fn push_age(&mut self, queue: Queue, seq: u64, (due, key): (u64, TxnKey)) {
        // A new sequence number: nothing to read before it, and undone by removing it.
        let value = Some(age_value(due, &key).to_vec());
        self.record(Space::Ages, age_key(queue, seq).to_vec(), value, || None);
    }

    fn age(&self, queue: Queue, seq: u64) -> Option<(u64, TxnKey)> {
        let bytes = self.read(Space::Ages, &age_key(queue, seq));
        let entry = bytes.as_deref().and_then(age_from);
        if entry.is_none() {
            self.fail(
                "a queue entry on disk is missing or damaged",
                format!("{queue:?} {seq}"),
            );
        }
        entry
    }

    fn remove_age(&mut self, queue: Queue, seq: u64) {
        self.write(Space::Ages, &age_key(queue, seq), None);
    }

    fn commit(&mut self, version: u64) {
        if self.failure().is_some() {
            self.pending.clear();
            return;
        }
        let mut batch = self.store.db.batch();
        let mut undo = Vec::with_capacity(self.pending.len() * 48);
        for ((space, key), (new, old)) in self.pending.drain() {
            append_undo(&mut undo, space, &key, old.as_deref());
            let keyspace = match space {
                Space::Transactions => &self.txns,
                Space::Ages => &self.ages,
            };
            match new {
                Some(value) => batch.insert(keyspace, key, value),
                None => batch.remove(keyspace, key),
            }
        }
        if !undo.is_empty() {
            batch.insert(&self.undo, version.to_be_bytes(), undo);
        }
        batch.insert(
            &self.store.meta,
            version_key("version", self.shard),
            version.to_be_bytes(),
        );
        if let Err(error) = batch.commit() {
            self.fail("a write", error);
        }
    }

    fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn all(&self) -> Vec<(TxnKey, Record)> {
        let mut out = Vec::new();
        for guard in self.txns.iter() {
            match guard.into_inner() {
                Ok((key, value)) => {
                    match (txn_key_from(&key), format::decode_transaction(&value)) {
                        (Some(key), Ok(record)) => out.push((key, record)),
                        (_, Err(error)) => self.fail("a stored transaction does not decode", error),
                        (None, _) => self.fail("a stored key", "of the wrong size"),
                    }
                }
                Err(error) => self.fail("a scan", error),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Kind, Pan, Posting, Tokenizer};
    use crate::ledger::{Account, LedgerShard, ShardLimits};

    const NOW: u64 = 1_795_703_415;
    const FIELD7: u64 = 1_126_143_015;

    fn hold(stan: u32, amount: u64) -> Posting {
        Posting {
            kind: Kind::Authorization,
            card: Tokenizer::new([7; 16]).token(&Pan::from_scheme("400000", 1, 9).unwrap()),
            amount,
            currency: Some(840),
            key: TxnKey {
                acquirer: 123_456,
                terminal: *b"TERM0001",
                stan,
                transmission: FIELD7,
            },
            original: None,
            replacement: None,
        }
    }

    /// The steps after the snapshot: the holds on disk expire, then the first one's key comes
    /// back for a new hold, which is moved to disk in turn.
    fn after_snapshot(shard: &mut LedgerShard) -> Vec<String> {
        let step = shard.expiry_step(NOW + 200, 100, 100);
        let mut seen = vec![format!("{:?}", shard.expire_step(&step))];
        for (stan, amount) in [(1, 500), (3, 70), (4, 80)] {
            seen.push(format!("{:?}", shard.apply(&hold(stan, amount), NOW + 300)));
        }
        seen
    }

    /// A key on disk at a snapshot, taken by expiry after it and reused by a transaction that
    /// moved to disk in turn: recovery must roll the store back to exactly the snapshot's
    /// state, or replay releases nothing where the live run released the hold.
    #[test]
    fn a_key_taken_and_reused_after_the_snapshot_rolls_back_and_replays_exactly() {
        let dir = std::env::temp_dir().join(format!("switch-cold-reuse-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let limits = ShardLimits {
            transactions_max: 1_000,
            hot_max: 1,
            hold_expiry_seconds: 100,
            reversal_window_seconds: 50,
        };
        let card = hold(0, 0).card;
        let (snapshot, live, live_seen) = {
            let store = ColdStore::open(&dir).unwrap();
            let mut shard = LedgerShard::new(0, limits)
                .with_cold(Box::new(store.shard(0, &ColdState::default()).unwrap()));
            shard.open_account(card, Account::new(1_000_000, 840));
            for stan in [1, 2] {
                shard.apply(&hold(stan, 1_000), NOW);
            }
            assert!(shard.cold_state().count >= 1, "the first hold is on disk");
            let snapshot = shard.image();
            let seen = after_snapshot(&mut shard);
            assert!(seen[0].contains("released: 2"), "{seen:?}");
            (snapshot, shard.full_image(), (seen, shard.cold_state()))
        };
        let store = ColdStore::open(&dir).unwrap();
        let tier = store.shard(0, &snapshot.cold).unwrap();
        let mut shard = LedgerShard::from_image(0, limits, snapshot).with_cold(Box::new(tier));
        let seen = after_snapshot(&mut shard);
        assert_eq!((seen, shard.cold_state()), live_seen);
        assert!(shard.full_image().same_state(&live));
        drop(shard);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn keys_and_undo_entries_read_back() {
        let key = TxnKey {
            acquirer: 123_456,
            terminal: *b"TERM0001",
            stan: 42,
            transmission: 1_126_143_015,
        };
        assert_eq!(txn_key_from(&txn_key(&key)), Some(key));
        assert_eq!(age_from(&age_value(7, &key)), Some((7, key)));
        let items = vec![
            (
                Space::Transactions,
                txn_key(&key).to_vec(),
                Some(vec![1, 2, 3]),
            ),
            (Space::Ages, age_key(Queue::Postings, 9).to_vec(), None),
        ];
        let mut encoded = Vec::new();
        for (space, key, old) in &items {
            append_undo(&mut encoded, *space, key, old.as_deref());
        }
        assert_eq!(decode_undo(&encoded), Some(items));
        assert_eq!(decode_undo(&[0, 5, 1]), None, "cut short");
    }
}
