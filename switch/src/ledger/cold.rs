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
use std::sync::{Arc, Mutex, RwLock};

use anyhow::{Context, bail};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::shard::{ColdReader, ColdState, ColdTier, Queue, Record, ShardImage};
use crate::domain::TxnKey;
use crate::domain::hash::TableHasher;
use crate::wal::format;

/// The keyspaces a write lands in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Space {
    Transactions = 0,
    Ages = 1,
}

const KEY_BYTES: usize = 28;
const _: () = assert!(
    KEY_BYTES == 28,
    "StoreKey::txn writes its length as a literal"
);

/// Undo entries undone in one write batch by a rollback ([`ColdStore::roll_back`]), at most;
/// and the keys one batch writes, at most (a spill's entry holds about a thousand).
const ROLLBACK_BATCH: usize = 4_096;
const ROLLBACK_KEYS_MAX: usize = 65_536;

/// How long a snapshot waits for the store threads to write what it counts on.
const PERSIST_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(60);

pub(crate) fn txn_key(key: &TxnKey) -> [u8; KEY_BYTES] {
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

/// Empties `dir`, which holds a fjall database (its `version` file, or only what fjall makes
/// before it) or nothing, for a store made anew (`what` names it in errors); anything else in
/// it refuses the start, and a `lost+found` (a file system's root) stays.
pub(crate) fn empty_store_dir(dir: &Path, what: &str) -> anyhow::Result<()> {
    let entries: Vec<std::fs::DirEntry> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("cannot read {}", dir.display()))?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => {
            return Err(error).with_context(|| format!("cannot read {}", dir.display()));
        }
    };
    let ours = |name: &std::ffi::OsStr| name != "lost+found";
    // What fjall makes before its `version` file: a start cut short while creating the store.
    let fjall = |name: &std::ffi::OsStr| {
        name == "lock" || name == "keyspaces" || name.to_str().is_some_and(|n| n.ends_with(".jnl"))
    };
    let mut others = entries.iter().filter(|e| ours(&e.file_name())).peekable();
    let store = entries.iter().any(|e| e.file_name() == "version")
        || (others.peek().is_some() && others.all(|e| fjall(&e.file_name())));
    if !store && entries.iter().any(|e| ours(&e.file_name())) {
        bail!(
            "{} holds files that are not {what}, which this start would empty: move them away (the directory \
             belongs to the switch, inside wal.dir)",
            dir.display()
        );
    }
    // `version` last: a start cut short here still finds a store to empty.
    let (version, rest): (Vec<_>, Vec<_>) = entries
        .iter()
        .filter(|e| ours(&e.file_name()))
        .partition(|e| e.file_name() == "version");
    for entry in rest.into_iter().chain(version) {
        let removed = if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())
        } else {
            std::fs::remove_file(entry.path())
        };
        removed.with_context(|| format!("cannot remove {}", entry.path().display()))?;
    }
    if store {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot sync {}", dir.display()))?;
    }
    Ok(())
}

/// How far a shard's store thread has written, and whether it failed.
type Progress = (Arc<std::sync::atomic::AtomicU64>, Arc<Failure>);

/// The store of every shard: one fjall database.
pub struct ColdStore {
    db: Database,
    /// Per shard: the version of its last committed change (`version/N`), and the oldest
    /// version its undo log can still go back to (`floor/N`).
    meta: Keyspace,
    dir: PathBuf,
    /// Serializes clearing against opening shards (recovery only); shards open side by side,
    /// each in its own keyspaces.
    lock: RwLock<()>,
    /// The most transactions one shard may keep: the bound of its filter of keys on disk.
    keys_max: u64,
    /// The filter's first capacity ([`FILTER_INITIAL`]; smaller in tests of its growth).
    filter_initial: u64,
    /// Per shard: the version its store thread has written up to, and its failure.
    written: Mutex<HashMap<u32, Progress>>,
    /// The shards' keyspaces opened so far, by name, for [`ColdStore::health`].
    opened: Mutex<HashMap<String, Keyspace>>,
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

/// fjall's bound on its journals, at its least (512 MiB by default): once the sealed ones pass
/// it, it flushes the memtables they hold, so at most about 190 MB stay with the active one.
/// Opening the store replays them into memtables, at about 40 MB/s on the 2-core benchmark
/// machine: with the default, a restart spent up to 10 s on it before the log was read
/// (bench/RESULTS.md).
const JOURNALS_MAX_BYTES: u64 = 64 * 1024 * 1024;

impl ColdStore {
    /// Empties `dir` and creates the store in it: for a start without a snapshot, where nothing
    /// on disk is older than the log. Faster than opening what is there and clearing it, which
    /// first replays fjall's journals. Only a directory holding a store (fjall's `version`
    /// file) or nothing is emptied; anything else refuses the start, and a `lost+found` (a
    /// file system's root) stays.
    pub fn create_empty(dir: &Path, keys_max: u64) -> anyhow::Result<Arc<ColdStore>> {
        empty_store_dir(dir, "the store of transactions on disk")?;
        ColdStore::open(dir, keys_max)
    }

    /// Opens (or creates) the store in `dir`, for shards that keep up to `keys_max`
    /// transactions each.
    pub fn open(dir: &Path, keys_max: u64) -> anyhow::Result<Arc<ColdStore>> {
        let started = std::time::Instant::now();
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let db = Database::builder(dir)
            .max_journaling_size(JOURNALS_MAX_BYTES)
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
        // Its flushes and compactions are maintenance, a step below the request path but not
        // far: the store threads, which write each change at the request path's priority,
        // wait for their flushes (crate::threads). Every fjall database's workers so named
        // (the answers on disk too).
        crate::threads::lower_threads_named("fjall:worker", crate::threads::DEFERRABLE_NICE);
        tracing::info!(dir = %dir.display(), elapsed = ?started.elapsed(), "store of transactions on disk opened");
        Ok(Arc::new(ColdStore {
            db,
            meta,
            dir: dir.to_owned(),
            lock: RwLock::new(()),
            keys_max,
            filter_initial: FILTER_INITIAL,
            written: Mutex::new(HashMap::new()),
            opened: Mutex::new(HashMap::new()),
        }))
    }

    fn keyspaces(&self, shard: u32) -> anyhow::Result<[Keyspace; 3]> {
        let open = |name: &str| {
            let name = format!("{name}-{shard}");
            let keyspace = self
                .db
                .keyspace(&name, options)
                .with_context(|| format!("cannot open keyspace {name}"))?;
            self.opened
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(name)
                .or_insert_with(|| keyspace.clone());
            anyhow::Ok(keyspace)
        };
        Ok([open("txn")?, open("age")?, open("undo")?])
    }

    /// What decides whether the store slows or halts its writes, and its size on disk (the
    /// `switch_store_*{store="transactions"}` gauges).
    pub fn health(&self) -> crate::ops::metrics::StoreHealth {
        let opened = self.opened.lock().unwrap_or_else(|e| e.into_inner());
        crate::ops::metrics::StoreHealth::of(
            &self.db,
            opened.values().chain(std::iter::once(&self.meta)),
        )
    }

    fn meta_u64(&self, kind: &str, shard: u32) -> anyhow::Result<u64> {
        Ok(self
            .meta
            .get(version_key(kind, shard))?
            .and_then(|v| u64_value(&v))
            .unwrap_or(0))
    }

    /// Whether shard `shard`'s part can go back to version `target` (a snapshot's; 0, which
    /// empties it, always can): the store must not be behind it, nor have let go of the undo
    /// entries back to it.
    pub fn check_rollback(&self, shard: u32, target: u64) -> anyhow::Result<()> {
        if target == 0 {
            return Ok(());
        }
        let stored = self.meta_u64("version", shard)?;
        let dir = self.dir.display();
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
        Ok(())
    }

    /// Shard `shard`'s tier, rolled back to `state.version` (from its snapshot; 0 without one,
    /// which empties it): the state the log after that snapshot was written on.
    pub fn shard(self: &Arc<Self>, shard: u32, state: &ColdState) -> anyhow::Result<DiskTier> {
        let _guard = self.lock.read().unwrap_or_else(|e| e.into_inner());
        let [txns, ages, undo] = self.keyspaces(shard)?;
        let target = state.version;
        if target == 0 {
            txns.clear()?;
            ages.clear()?;
            undo.clear()?;
        } else {
            self.check_rollback(shard, target)?;
            let started = std::time::Instant::now();
            let undone = self.roll_back(
                shard,
                [&txns, &ages, &undo],
                target,
                (ROLLBACK_BATCH, ROLLBACK_KEYS_MAX),
            )?;
            if undone > 0 {
                tracing::info!(shard, undone, elapsed = ?started.elapsed(), "store rolled back to the snapshot's version");
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
        let filter_hasher = TableHasher::default();
        let building = empty_filter(
            shard,
            state.count,
            self.keys_max,
            self.filter_initial,
            filter_hasher.clone(),
        )
        .and_then(|filter| build_filter(shard, filter, txns.iter()));
        let written = Arc::new(std::sync::atomic::AtomicU64::new(target));
        let failure = Arc::new(Failure::default());
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(shard, (written.clone(), failure.clone()));
        let (changes, taken) = crossbeam_channel::bounded(CHANGES_QUEUED_MAX);
        let thread = {
            let (store, keyspaces) = (self.clone(), [txns.clone(), ages.clone(), undo]);
            let (written, failure) = (written.clone(), failure.clone());
            std::thread::Builder::new()
                .name(format!("store-{shard}"))
                .spawn(move || write_changes(store, shard, keyspaces, taken, written, failure))
                .context("cannot start a store thread")?
        };
        Ok(DiskTier {
            store: self.clone(),
            shard,
            txns,
            ages,
            pending: KeyMap::default(),
            sent: KeyMap::default(),
            sent_order: std::collections::VecDeque::new(),
            last_sent: target,
            written,
            fetching: KeyMap::default(),
            fetched: KeyMap::default(),
            filter: None,
            filter_hasher,
            filter_max: self.keys_max.max(self.filter_initial),
            filters_grown: 0,
            grow_aside: true,
            growing: building,
            writer: Writer {
                changes: Some(changes),
                thread: Some(thread),
            },
            failure,
        })
    }

    /// Undoes shard `shard`'s changes after version `target`, newest first, `batch_max` undo
    /// entries to a write batch: each batch writes what its keys held before the oldest
    /// change of it, removes its undo entries and sets the version it leaves, atomically, so a
    /// rollback cut short by a crash resumes where it stopped. (The change of a request writes
    /// a few keys: a batch apiece would commit once per request to undo.)
    /// One iterator going down: each entry removed is behind it, so none is met again (a new
    /// iterator per batch would skip every removed one).
    fn roll_back(
        &self,
        shard: u32,
        [txns, ages, undo]: [&Keyspace; 3],
        target: u64,
        (batch_max, keys_max): (usize, usize),
    ) -> anyhow::Result<u64> {
        let mut undone = 0;
        let mut held: HashMap<(Space, Vec<u8>), Option<Vec<u8>>> = HashMap::new();
        let mut versions: Vec<u64> = Vec::new();
        let commit = |held: &mut HashMap<(Space, Vec<u8>), Option<Vec<u8>>>,
                      versions: &mut Vec<u64>|
         -> anyhow::Result<()> {
            let Some(&oldest) = versions.last() else {
                return Ok(());
            };
            let mut batch = self.db.batch();
            for ((space, key), old) in held.drain() {
                let keyspace = match space {
                    Space::Transactions => txns,
                    Space::Ages => ages,
                };
                match old {
                    Some(old) => batch.insert(keyspace, key, old),
                    None => batch.remove(keyspace, key),
                }
            }
            for version in versions.drain(..) {
                batch.remove(undo, version.to_be_bytes());
            }
            batch.insert(
                &self.meta,
                version_key("version", shard),
                (oldest - 1).to_be_bytes(),
            );
            batch.commit()?;
            Ok(())
        };
        for guard in undo.range(((target + 1).to_be_bytes())..).rev() {
            let (key, value) = guard.into_inner()?;
            let version = u64_value(&key).context("an undo key of the wrong size")?;
            let items = decode_undo(&value)
                .with_context(|| format!("the undo entry of version {version} is damaged"))?;
            // What a key held before this change overrides what it held before a newer one;
            // within the change, its first write holds what was there before it.
            for (space, key, old) in items.into_iter().rev() {
                held.insert((space, key), old);
            }
            versions.push(version);
            undone += 1;
            if versions.len() >= batch_max || held.len() >= keys_max {
                commit(&mut held, &mut versions)?;
            }
        }
        commit(&mut held, &mut versions)?;
        Ok(undone)
    }

    /// Empties every shard's part (a new split of the shards starts from nothing on disk).
    pub fn clear(&self) -> anyhow::Result<()> {
        let _guard = self.lock.write().unwrap_or_else(|e| e.into_inner());
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

    /// Syncs every change the images count on, once each shard's store thread has written
    /// it: before a snapshot of them is written.
    pub fn persist(&self, images: &[&ShardImage]) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + PERSIST_WAIT_MAX;
        for (shard, image) in images.iter().enumerate() {
            let shard = u32::try_from(shard).unwrap_or(u32::MAX);
            let written = self
                .written
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&shard)
                .cloned();
            let Some((written, failure)) = written else {
                continue;
            };
            let needed = image.cold.version;
            loop {
                let now = written.load(std::sync::atomic::Ordering::Acquire);
                if now >= needed {
                    break;
                }
                if let Some(why) = failure.why() {
                    bail!("{why}");
                }
                if std::time::Instant::now() > deadline {
                    bail!(
                        "the store thread of shard {shard} has written up to version {now}, the snapshot needs {needed}"
                    );
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
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

/// Changes that may wait for a shard's store thread; past it the shard waits (backpressure).
const CHANGES_QUEUED_MAX: usize = 256;
/// How long a shard waits for room in its store thread's queue before it calls the store
/// failed (stops, and recovery rebuilds): a store thread that takes nothing for this long is
/// stuck (a full disk that fjall waits out, say).
const STORE_STUCK_AFTER: std::time::Duration = std::time::Duration::from_secs(30);
/// Slots of the store thread's map of a group's writes kept from one group to the next.
const NOW_KEPT_MAX: usize = 1 << 16;
/// Changes the store thread writes as one batch at most.
const GROUP_MAX: usize = 64;
/// How often a lookup of a key absent from the store may read it anyway (the filter's false
/// positives): such a read may wait out a flush of the store.
const FILTER_ERROR_RATE: f64 = 1e-4;
/// The filter's first size; it doubles as the store fills, up to the configured bound.
const FILTER_INITIAL: u64 = 1 << 20;

/// A key of one of a shard's keyspaces, inline (no allocation to look one up).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct StoreKey {
    space: Space,
    len: u8,
    bytes: [u8; KEY_BYTES],
}

impl StoreKey {
    fn txn(key: &TxnKey) -> StoreKey {
        StoreKey {
            space: Space::Transactions,
            len: 28,
            bytes: txn_key(key),
        }
    }

    fn age(queue: Queue, seq: u64) -> StoreKey {
        let mut bytes = [0u8; KEY_BYTES];
        bytes[..9].copy_from_slice(&age_key(queue, seq));
        StoreKey {
            space: Space::Ages,
            len: 9,
            bytes,
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// The maps of keys the shard wrote: keys an acquirer chose, so a seeded hasher, and a fast one.
type KeyMap<V> = HashMap<StoreKey, V, TableHasher>;
/// What a key holds (`None`: nothing).
type Value = Option<Vec<u8>>;

/// A change on its way to the shard's store thread: what each key is to hold (`None`:
/// removed), and whether the key is known to hold nothing before it (else the thread reads
/// what it held, for the undo log).
struct Change {
    version: u64,
    writes: Vec<(StoreKey, Value, bool)>,
}

/// The shard's store thread, which writes its changes with their undo entries.
struct Writer {
    changes: Option<crossbeam_channel::Sender<Change>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One shard's part of the store, as its shard sees it.
///
/// **Writes go to a thread of the shard's own** ([`CHANGES_QUEUED_MAX`] changes may wait):
/// fjall's flushes and compactions hold its trees' version lock across an `fsync`, and a
/// write on the shard's thread would wait for it, for hundreds of milliseconds under load
/// (bench/RESULTS.md). Until the thread has written a change, its writes stay in memory and
/// lookups find them there first.
///
/// **A filter of the keys on disk** (a quotient filter, in memory) answers most lookups of
/// a key that is not there (the duplicate check of every new transaction) without reading
/// the store; a lookup it lets through reads the store on the shard's thread.
pub struct DiskTier {
    store: Arc<ColdStore>,
    shard: u32,
    txns: Keyspace,
    ages: Keyspace,
    /// This change's writes: (space, key) → (new value, whether the key held nothing before).
    pending: KeyMap<(Value, bool)>,
    /// Writes sent to the store thread and not yet written: (space, key) → (value, version).
    sent: KeyMap<(Value, u64)>,
    /// The keys of each change in `sent`, oldest first, to forget them once written.
    sent_order: std::collections::VecDeque<(u64, Vec<StoreKey>)>,
    last_sent: u64,
    /// The version the store thread has written up to.
    written: Arc<std::sync::atomic::AtomicU64>,
    /// Transactions being read ahead, off the shard's thread: whether what the read finds is
    /// still the key's value (no write of the key since the read started).
    fetching: KeyMap<bool>,
    /// What reads ahead found, until the shard lets go of it or writes the key.
    fetched: KeyMap<Value>,
    /// The transactions' keys on disk; `None` if it could not hold them (every lookup reads).
    filter: Option<KeyFilter>,
    /// The filter's hasher (seeded at start) and its bound, for a grown copy.
    filter_hasher: TableHasher,
    filter_max: u64,
    /// A grown copy of the filter being built on a thread of its own.
    growing: Option<Growing>,
    /// Grown copies taken in so far.
    filters_grown: u64,
    /// Whether the filter grows on a thread of its own (until an attempt fails).
    grow_aside: bool,
    writer: Writer,
    failure: Arc<Failure>,
}

impl std::fmt::Debug for DiskTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskTier")
            .field("shard", &self.shard)
            .field("pending", &self.pending.len())
            .field("sent", &self.sent.len())
            .finish_non_exhaustive()
    }
}

/// Why a shard's part of the store can no longer be trusted, once it cannot; asked after
/// every change, so the usual answer (none) takes no lock.
#[derive(Debug, Default)]
struct Failure {
    failed: std::sync::atomic::AtomicBool,
    why: Mutex<Option<String>>,
}

impl Failure {
    /// Why, once it failed; no lock until then.
    fn why(&self) -> Option<String> {
        if !self.failed.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        self.why.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn set_failure(
    failure: &Failure,
    dir: &Path,
    shard: u32,
    what: &str,
    error: impl std::fmt::Display,
) {
    let mut why = failure.why.lock().unwrap_or_else(|e| e.into_inner());
    if why.is_none() {
        *why = Some(format!(
            "the transactions on disk ({}, shard {shard}) failed: {what}: {error}",
            dir.display(),
        ));
        failure
            .failed
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

/// A grown copy of a shard's filter, built off the shard's thread: what the shard did to its
/// filter meanwhile (key, added or removed) is done to the copy once it arrives.
struct Growing {
    log: Vec<(StoreKey, bool)>,
    grown: crossbeam_channel::Receiver<KeyFilter>,
}

/// A filter this full (of its current capacity) starts a grown copy; at full, qfilter grows it
/// on the shard's thread, which copies every fingerprint (about a second at 16 M keys).
const FILTER_GROW_AT_PERCENT: u64 = 70;

/// The filter of the keys on disk: seeded at random, so that keys chosen to collide in it
/// cannot be prepared in advance (it is rebuilt at every start, never stored).
type KeyFilter = qfilter::Filter<Box<[u8]>, TableHasher>;

/// Whether this CPU has what the filter's code needs (qfilter asserts it otherwise).
pub(crate) fn filter_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("popcnt") && std::is_x86_feature_detected!("bmi2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        true
    }
}

/// The capacity to ask of a filter grown from one of `capacity`: twice the slots. `capacity`
/// is 95% of the slots, rounded up, so twice it may not fit in twice the slots, and qfilter
/// would take four times.
fn grown_capacity(capacity: u64, max: u64) -> u64 {
    capacity.saturating_mul(2).saturating_sub(1).min(max)
}

/// An empty filter with room for twice the `count` keys on disk before it grows, and for
/// `keys_max` at most. `None` (every lookup reads the store) where it cannot be had, with the
/// reason logged.
fn empty_filter(
    shard: u32,
    count: u64,
    keys_max: u64,
    first: u64,
    hasher: TableHasher,
) -> Option<KeyFilter> {
    if !filter_supported() {
        tracing::warn!(
            shard,
            "this CPU lacks popcnt or bmi2: no filter of the keys on disk, every lookup of a new key reads the store"
        );
        return None;
    }
    let keys_max = keys_max.max(first);
    let initial = count.saturating_mul(2).clamp(first, keys_max);
    match KeyFilter::new_resizeable_with_hasher(initial, keys_max, FILTER_ERROR_RATE, hasher) {
        Ok(filter) => Some(filter),
        Err(error) => {
            tracing::warn!(
                shard,
                ?error,
                "no filter of the keys on disk: every lookup of a new key reads the store"
            );
            None
        }
    }
}

/// Fills `filter` with the keys `keys` yields (an iterator over the store as it was when it was
/// made) on a thread of its own: a start does not wait for a scan of everything on disk. Until
/// the shard takes the filter in (with what it added and removed meanwhile), every lookup
/// reads the store.
fn build_filter(shard: u32, mut filter: KeyFilter, keys: fjall::Iter) -> Option<Growing> {
    let (done, grown) = crossbeam_channel::bounded(1);
    let started = std::time::Instant::now();
    std::thread::Builder::new()
        .name(format!("filter-{shard}"))
        .spawn(move || {
            // Until it is done, lookups read the store: slower, never wrong (crate::threads).
            crate::threads::lower_this_thread("filter", crate::threads::MAINTENANCE_NICE);
            for guard in keys {
                let key = match guard.key() {
                    Ok(key) => key,
                    Err(error) => {
                        tracing::warn!(shard, %error, "reading the keys on disk for their filter failed: every lookup of a new key reads the store");
                        return;
                    }
                };
                if filter.insert_duplicated(&key[..]).is_err() {
                    tracing::warn!(shard, "the filter of the keys on disk is full: every lookup of a new key reads the store");
                    return;
                }
            }
            tracing::info!(shard, keys = filter.len(), elapsed = ?started.elapsed(), "filter of the keys on disk built");
            let _ = done.send(filter);
        })
        .inspect_err(|error| {
            tracing::warn!(shard, %error, "cannot start building the filter of the keys on disk: every lookup of a new key reads the store");
        })
        .ok()?;
    Some(Growing {
        log: Vec::new(),
        grown,
    })
}

/// The store thread's work: each group of changes waiting is one batch, with an undo entry
/// per change. After a failure it writes nothing more (and the shard stops), but goes on
/// taking changes, so that the shard never waits for it.
fn write_changes(
    store: Arc<ColdStore>,
    shard: u32,
    [txns, ages, undo]: [Keyspace; 3],
    changes: crossbeam_channel::Receiver<Change>,
    written: Arc<std::sync::atomic::AtomicU64>,
    failure: Arc<Failure>,
) {
    let mut failed = false;
    let mut group = Vec::with_capacity(GROUP_MAX);
    // Kept from group to group: a map built anew each time spent a seventh of this thread's
    // time growing it, page faults included (a profile of replay).
    let mut now = KeyMap::default();
    while let Ok(first) = changes.recv() {
        group.clear();
        group.push(first);
        while group.len() < GROUP_MAX
            && let Ok(next) = changes.try_recv()
        {
            group.push(next);
        }
        if failed {
            continue;
        }
        let wrote = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            write_group(&store, shard, [&txns, &ages, &undo], &group, &mut now)
        }));
        match wrote {
            Ok(Ok(version)) => written.store(version, std::sync::atomic::Ordering::Release),
            Ok(Err(error)) => {
                set_failure(&failure, &store.dir, shard, "a write", format!("{error:#}"));
                failed = true;
            }
            Err(_) => {
                set_failure(
                    &failure,
                    &store.dir,
                    shard,
                    "a write",
                    "the store thread panicked",
                );
                failed = true;
            }
        }
    }
}

fn write_group(
    store: &ColdStore,
    shard: u32,
    [txns, ages, undo]: [&Keyspace; 3],
    group: &[Change],
    now: &mut KeyMap<(usize, usize)>,
) -> anyhow::Result<u64> {
    let mut batch = store.db.batch();
    // What this group wrote so far, as (change, write) in `group`: a later change of it reads
    // what a key held from there.
    if now.capacity() > NOW_KEPT_MAX {
        // After a mass expiry: clearing touches every slot, so start small again.
        *now = KeyMap::default();
    }
    now.clear();
    let mut last = 0;
    for (at, change) in group.iter().enumerate() {
        let mut entry = Vec::with_capacity(change.writes.len() * 48);
        for (which, (key, value, absent)) in change.writes.iter().enumerate() {
            let keyspace = match key.space {
                Space::Transactions => txns,
                Space::Ages => ages,
            };
            let before = if *absent {
                None
            } else if let Some(&(c, w)) = now.get(key) {
                group
                    .get(c)
                    .and_then(|change| change.writes.get(w))
                    .and_then(|(_, held, _)| held.clone())
            } else {
                keyspace.get(key.bytes())?.map(|v| v.to_vec())
            };
            append_undo(&mut entry, key.space, key.bytes(), before.as_deref());
            match value {
                Some(value) => batch.insert(keyspace, key.bytes(), value.as_slice()),
                None => batch.remove(keyspace, key.bytes()),
            }
            now.insert(*key, (at, which));
        }
        if !entry.is_empty() {
            batch.insert(undo, change.version.to_be_bytes(), entry);
        }
        last = change.version;
    }
    batch.insert(
        &store.meta,
        version_key("version", shard),
        last.to_be_bytes(),
    );
    batch.commit()?;
    Ok(last)
}

impl DiskTier {
    fn fail(&self, what: &str, error: impl std::fmt::Display) {
        set_failure(&self.failure, &self.store.dir, self.shard, what, error);
    }

    fn keyspace(&self, space: Space) -> &Keyspace {
        match space {
            Space::Transactions => &self.txns,
            Space::Ages => &self.ages,
        }
    }

    /// What `key` holds now: this change's write, else one not yet written by the store
    /// thread, else the store's.
    fn read(&self, key: &StoreKey) -> Option<Vec<u8>> {
        if !self.pending.is_empty()
            && let Some((new, _)) = self.pending.get(key)
        {
            return new.clone();
        }
        if !self.sent.is_empty()
            && let Some((new, _)) = self.sent.get(key)
        {
            return new.clone();
        }
        if !self.fetched.is_empty()
            && let Some(found) = self.fetched.get(key)
        {
            return found.clone();
        }
        if key.space == Space::Transactions
            && let Some(filter) = &self.filter
            && !filter.contains(key.bytes())
        {
            return None;
        }
        match self.keyspace(key.space).get(key.bytes()) {
            Ok(value) => value.map(|v| v.to_vec()),
            Err(error) => {
                self.fail("a read", error);
                None
            }
        }
    }

    /// Gathers a write into this change; `absent`: the key is known to hold nothing before
    /// the change (asked only at the change's first write of the key: the undo entry
    /// restores the state before the change).
    fn record(&mut self, key: StoreKey, value: Value, absent: bool) {
        // What a read ahead found (or will find) is no longer the key's value: the write is.
        if !self.fetching.is_empty()
            && let Some(current) = self.fetching.get_mut(&key)
        {
            *current = false;
        }
        if !self.fetched.is_empty() {
            self.fetched.remove(&key);
        }
        match self.pending.entry(key) {
            std::collections::hash_map::Entry::Occupied(mut slot) => slot.get_mut().0 = value,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert((value, absent));
            }
        }
    }

    /// Takes in a filter built or grown on its own thread once it is ready, and starts a grown
    /// copy of the filter once it is [`FILTER_GROW_AT_PERCENT`] full.
    fn grow_filter(&mut self) {
        if let Some(growing) = &mut self.growing {
            match growing.grown.try_recv() {
                Ok(mut grown) => {
                    let caught_up = growing.log.iter().all(|(key, added)| {
                        if *added {
                            grown.insert_duplicated(key.bytes()).is_ok()
                        } else {
                            grown.remove(key.bytes());
                            true
                        }
                    });
                    if caught_up {
                        self.filter = Some(grown);
                        self.filters_grown += 1;
                    }
                    self.growing = None;
                }
                Err(crossbeam_channel::TryRecvError::Empty) => {}
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    self.growing = None;
                    if self.filter.is_some() {
                        self.stop_growing_aside(&"its thread ended without a filter");
                    }
                }
            }
            return;
        }
        let Some(filter) = &self.filter else {
            return;
        };
        let capacity = filter.capacity();
        if !self.grow_aside
            || filter.len().saturating_mul(100) < capacity.saturating_mul(FILTER_GROW_AT_PERCENT)
            || capacity >= filter.max_capacity()
        {
            return;
        }
        // Copying the filter is a memcpy (tens of ms at tens of millions of keys); building
        // the grown one, a second or so, is the thread's.
        let copy = filter.clone();
        let (hasher, max) = (self.filter_hasher.clone(), self.filter_max);
        let (done, grown) = crossbeam_channel::bounded(1);
        let started = std::thread::Builder::new()
            .name(format!("filter-{}", self.shard))
            .spawn(move || {
                crate::threads::lower_this_thread("filter", crate::threads::MAINTENANCE_NICE);
                let initial = grown_capacity(capacity, max);
                let Ok(mut bigger) =
                    KeyFilter::new_resizeable_with_hasher(initial, max, FILTER_ERROR_RATE, hasher)
                else {
                    return;
                };
                // Same error rate and bound: the same fingerprints, whatever the size.
                if bigger.fingerprint_size() != copy.fingerprint_size() {
                    return;
                }
                for fingerprint in copy.fingerprints() {
                    if bigger.insert_fingerprint(true, fingerprint).is_err() {
                        return;
                    }
                }
                let _ = done.send(bigger);
            });
        match started {
            Ok(_) => {
                self.growing = Some(Growing {
                    log: Vec::new(),
                    grown,
                });
            }
            Err(error) => self.stop_growing_aside(&error),
        }
    }

    /// Leaves growing the filter to qfilter, in place on the shard's thread (a stall of up to a
    /// second), rather than copying it again at every insert after a failed attempt.
    fn stop_growing_aside(&mut self, why: &dyn std::fmt::Display) {
        tracing::warn!(
            shard = self.shard,
            %why,
            "the filter of the keys on disk cannot grow on a thread of its own: it grows in place from now on"
        );
        self.grow_aside = false;
    }

    /// Forgets the writes the store thread has made: lookups find them in the store now.
    fn forget_written(&mut self) {
        let written = self.written.load(std::sync::atomic::Ordering::Acquire);
        while let Some((version, _)) = self.sent_order.front()
            && *version <= written
        {
            let Some((_, keys)) = self.sent_order.pop_front() else {
                break;
            };
            for key in keys {
                if let std::collections::hash_map::Entry::Occupied(slot) = self.sent.entry(key)
                    && slot.get().1 <= written
                {
                    slot.remove();
                }
            }
        }
    }

    /// Waits until the store thread has written every change sent (or failed).
    fn wait_written(&self) {
        while self.written.load(std::sync::atomic::Ordering::Acquire) < self.last_sent
            && self.failure().is_none()
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

impl Drop for DiskTier {
    fn drop(&mut self) {
        // The thread writes what it was sent, then ends.
        self.writer.changes = None;
        if let Some(thread) = self.writer.thread.take() {
            let _ = thread.join();
        }
    }
}

impl ColdTier for DiskTier {
    fn get(&self, key: &TxnKey) -> Option<Record> {
        let bytes = self.read(&StoreKey::txn(key))?;
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
        self.record(StoreKey::txn(key), Some(value), false);
    }

    fn remove(&mut self, key: &TxnKey) -> Option<Record> {
        let key = StoreKey::txn(key);
        let before = self.read(&key)?;
        self.record(key, None, false);
        if let Some(filter) = &mut self.filter {
            filter.remove(key.bytes());
        }
        if let Some(growing) = &mut self.growing {
            growing.log.push((key, false));
        }
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
        let key = StoreKey::txn(key);
        // Before the insert: a grown copy taken in now has what came before it, and one
        // started now is a copy without this key, which the log then gives it.
        self.grow_filter();
        if let Some(growing) = &mut self.growing {
            growing.log.push((key, true));
        }
        if let Some(filter) = &mut self.filter
            && filter.insert_duplicated(key.bytes()).is_err()
        {
            tracing::warn!(
                shard = self.shard,
                "the filter of the transactions on disk is full: every lookup reads the store from now on"
            );
            self.filter = None;
        }
        // Absent by the caller's word: nothing to read before it, and undone by removing it.
        self.record(key, Some(value), true);
    }

    fn push_age(&mut self, queue: Queue, seq: u64, (due, key): (u64, TxnKey)) {
        // A new sequence number: nothing to read before it, and undone by removing it.
        let value = Some(age_value(due, &key).to_vec());
        self.record(StoreKey::age(queue, seq), value, true);
    }

    fn age(&self, queue: Queue, seq: u64) -> Option<(u64, TxnKey)> {
        let bytes = self.read(&StoreKey::age(queue, seq));
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
        self.record(StoreKey::age(queue, seq), None, false);
    }

    fn commit(&mut self, version: u64) {
        self.forget_written();
        self.grow_filter();
        if self.failure().is_some() {
            self.pending.clear();
            return;
        }
        let mut writes = Vec::with_capacity(self.pending.len());
        let mut keys = Vec::with_capacity(self.pending.len());
        for (key, (value, absent)) in self.pending.drain() {
            self.sent.insert(key, (value.clone(), version));
            keys.push(key);
            writes.push((key, value, absent));
        }
        self.sent_order.push_back((version, keys));
        self.last_sent = version;
        let sent = self
            .writer
            .changes
            .as_ref()
            .map(|changes| changes.send_timeout(Change { version, writes }, STORE_STUCK_AFTER));
        match sent {
            Some(Ok(())) => {}
            Some(Err(crossbeam_channel::SendTimeoutError::Timeout(_))) => self.fail(
                "a write",
                format!("the store's thread has taken no change for {STORE_STUCK_AFTER:?}"),
            ),
            Some(Err(crossbeam_channel::SendTimeoutError::Disconnected(_))) | None => {
                self.fail("a write", "the store's thread has stopped");
            }
        }
    }

    fn flush(&self) {
        self.wait_written();
    }

    fn failure(&self) -> Option<String> {
        self.failure.why()
    }

    fn would_read(&self, key: &TxnKey, expected: bool) -> bool {
        let key = StoreKey::txn(key);
        let maybe = match &self.filter {
            Some(filter) => filter.contains(key.bytes()),
            None => expected,
        };
        maybe
            && !(self.pending.contains_key(&key)
                || self.sent.contains_key(&key)
                || self.fetched.contains_key(&key))
    }

    fn reader(&self) -> Option<ColdReader> {
        let txns = self.txns.clone();
        Some(Arc::new(move |key: &TxnKey| {
            txns.get(txn_key(key))
                .map(|value| value.map(|v| v.to_vec()))
                .map_err(|error| error.to_string())
        }))
    }

    fn fetch_started(&mut self, key: &TxnKey) {
        self.fetching.insert(StoreKey::txn(key), true);
    }

    fn fetched(&mut self, key: &TxnKey, value: Result<Option<Vec<u8>>, String>) {
        let key = StoreKey::txn(key);
        if self.fetching.remove(&key) != Some(true) {
            // Written since the read started (or never asked for): the write is the value.
            return;
        }
        match value {
            Ok(value) => {
                self.fetched.insert(key, value);
            }
            Err(error) => self.fail("a read", error),
        }
    }

    fn forget_fetched(&mut self, key: &TxnKey) {
        if !self.fetched.is_empty() {
            self.fetched.remove(&StoreKey::txn(key));
        }
    }

    fn forget_all_fetched(&mut self) {
        self.fetched.clear();
    }

    fn all(&self) -> Vec<(TxnKey, Record)> {
        self.wait_written();
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

    /// A start without a snapshot empties the store's directory and opens it anew, rather than
    /// replaying fjall's journals and clearing: nothing written before is found.
    #[test]
    fn a_store_created_empty_holds_nothing_of_before() {
        let dir = crate::testing::TempDir::new("cold-empty");
        let limits = ShardLimits {
            transactions_max: 1_000,
            hot_max: 1,
            hold_expiry_seconds: 100,
            reversal_window_seconds: 50,
        };
        let card = hold(0, 0).card;
        {
            let store = ColdStore::open(&dir, 1_000).unwrap();
            let mut shard = LedgerShard::new(0, limits)
                .with_cold(Box::new(store.shard(0, &ColdState::default()).unwrap()));
            shard.open_account(card, Account::new(1_000_000, 840));
            for stan in [1, 2, 3] {
                shard.apply(&hold(stan, 1_000), NOW);
            }
            shard.cold_flush();
            assert!(shard.cold_state().count >= 2);
            assert!(shard.transaction(&hold(1, 0).key).is_some());
        }
        std::fs::write(dir.join("left-over"), b"x").unwrap();
        let store = ColdStore::create_empty(&dir, 1_000).unwrap();
        assert!(!dir.join("left-over").exists());
        assert!(dir.join("version").exists());
        // Before any shard opens its part (which would clear it anyway at version 0).
        let names: Vec<String> = store
            .db
            .list_keyspace_names()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names, ["meta"]);
        // An absent directory is created.
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(ColdStore::create_empty(&dir, 1_000).is_ok());
        // A directory of something else is not emptied.
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("notes.txt"), b"mine").unwrap();
        let error = ColdStore::create_empty(&dir, 1_000)
            .unwrap_err()
            .to_string();
        assert!(error.contains("not the store"), "{error}");
        assert!(dir.join("notes.txt").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A key on disk at a snapshot, taken by expiry after it and reused by a transaction that
    /// moved to disk in turn: recovery must roll the store back to exactly the snapshot's
    /// state, or replay releases nothing where the live run released the hold.
    #[test]
    fn a_key_taken_and_reused_after_the_snapshot_rolls_back_and_replays_exactly() {
        let dir = crate::testing::TempDir::new("cold-reuse");
        let limits = ShardLimits {
            transactions_max: 1_000,
            hot_max: 1,
            hold_expiry_seconds: 100,
            reversal_window_seconds: 50,
        };
        let card = hold(0, 0).card;
        let (snapshot, live, live_seen) = {
            let store = ColdStore::open(&dir, 1_000).unwrap();
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
        let store = ColdStore::open(&dir, 1_000).unwrap();
        let tier = store.shard(0, &snapshot.cold).unwrap();
        let mut shard = LedgerShard::from_image(0, limits, snapshot).with_cold(Box::new(tier));
        let seen = after_snapshot(&mut shard);
        assert_eq!((seen, shard.cold_state()), live_seen);
        assert!(shard.full_image().same_state(&live));
        drop(shard);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Changes that reach the store thread together are written as one batch, each with its
    /// own undo entry: a rollback undoes them one by one, each to what the one before left.
    /// In between, lookups find each change's writes (through the filter, for a key removed
    /// and added again).
    #[test]
    fn changes_written_together_roll_back_one_by_one() {
        let dir = crate::testing::TempDir::new("cold-group");
        let store = ColdStore::open(&dir, 1_000).unwrap();
        let key = hold(9, 0).key;
        let record = |amount| Record::new(hold(0, 0).card, Kind::Purchase, amount);
        let amount = |tier: &DiskTier| tier.get(&key).map(|r| r.amount);
        let mut tier = store.shard(0, &ColdState::default()).unwrap();
        tier.insert_new(&key, &record(100));
        tier.commit(1);
        tier.put(&key, &record(200));
        tier.commit(2);
        assert_eq!(amount(&tier), Some(200));
        assert_eq!(tier.remove(&key).map(|r| r.amount), Some(200));
        tier.commit(3);
        assert_eq!(amount(&tier), None);
        tier.insert_new(&key, &record(300));
        tier.commit(4);
        tier.flush();
        assert_eq!(tier.failure(), None);
        assert_eq!(amount(&tier), Some(300));
        drop(tier);
        for (version, expected) in [(3, None), (2, Some(200)), (1, Some(100)), (1, Some(100))] {
            let state = ColdState {
                version,
                ..ColdState::default()
            };
            let tier = store.shard(0, &state).unwrap();
            assert_eq!(amount(&tier), expected, "rolled back to version {version}");
        }
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A rollback undoes many changes per write batch: whatever the batch size, rolling back
    /// to a version leaves exactly what the store held at it, for keys written by several
    /// changes of one batch, removed and added again (and put twice in one change, which the tier
    /// merges into one write before it reaches the undo log).
    #[test]
    fn a_rollback_in_batches_leaves_what_each_version_held() {
        let keys: Vec<TxnKey> = (0..4).map(|stan| hold(stan, 0).key).collect();
        let record = |amount| Record::new(hold(0, 0).card, Kind::Purchase, amount);
        let amounts = |tier: &DiskTier| -> Vec<Option<u64>> {
            keys.iter()
                .map(|key| tier.get(key).map(|r| r.amount))
                .collect()
        };
        for (batch_max, keys_max) in [
            (1, 100),
            (2, 100),
            (3, 100),
            (5, 100),
            (4_096, 1),
            (4_096, 3),
            (4_096, 100),
        ] {
            let dir = crate::testing::TempDir::new(&format!("cold-batches-{batch_max}-{keys_max}"));
            let store = ColdStore::open(&dir, 1_000).unwrap();
            let mut tier = store.shard(0, &ColdState::default()).unwrap();
            let mut held = vec![amounts(&tier)];
            for version in 1..=24u64 {
                let key = &keys[usize::try_from(version * 7 % 4).unwrap()];
                match (tier.get(key).is_some(), version % 4) {
                    (false, _) => tier.insert_new(key, &record(version * 10)),
                    (true, 0) => {
                        tier.put(key, &record(version * 10));
                        tier.put(key, &record(version * 10 + 1));
                    }
                    (true, 1) => {
                        tier.remove(key);
                    }
                    (true, _) => tier.put(key, &record(version * 10)),
                }
                // A second key in most changes.
                let other = &keys[usize::try_from(version % 4).unwrap()];
                if other != key && tier.get(other).is_some() {
                    tier.put(other, &record(version * 100));
                }
                tier.commit(version);
                held.push(amounts(&tier));
            }
            tier.flush();
            assert_eq!(tier.failure(), None);
            drop(tier);
            for target in [23, 17, 9, 8, 1] {
                let [txns, ages, undo] = store.keyspaces(0).unwrap();
                store
                    .roll_back(0, [&txns, &ages, &undo], target, (batch_max, keys_max))
                    .unwrap();
                assert_eq!(store.meta_u64("version", 0).unwrap(), target);
                let state = ColdState {
                    version: target,
                    ..ColdState::default()
                };
                let tier = store.shard(0, &state).unwrap();
                assert_eq!(
                    amounts(&tier),
                    held[usize::try_from(target).unwrap()],
                    "batches of {batch_max} changes or {keys_max} keys, rolled back to {target}"
                );
            }
            drop(store);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// A grown filter has twice the room, never four times: qfilter rounds a capacity up to
    /// a power of two of slots, and 95% of them is the capacity.
    #[test]
    fn a_grown_filter_is_twice_the_size() {
        for first in (10..23).map(|bits| 1u64 << bits) {
            let filter = empty_filter(0, 0, 1 << 30, first, Default::default()).unwrap();
            let capacity = filter.capacity();
            let grown = KeyFilter::new_resizeable_with_hasher(
                grown_capacity(capacity, 1 << 30),
                1 << 30,
                FILTER_ERROR_RATE,
                Default::default(),
            )
            .unwrap();
            assert!(
                grown.capacity() <= capacity * 2 + 1,
                "from {first}: {capacity} grew to {}",
                grown.capacity()
            );
            assert!(grown.capacity() >= capacity * 2 - 1);
            assert_eq!(grown.fingerprint_size(), filter.fingerprint_size());
        }
    }

    /// The filter grows on a thread of its own while keys keep coming and going: once it has
    /// grown, every key on disk is still found and every key removed is not.
    #[test]
    fn the_filter_grows_off_the_shards_thread_and_loses_no_key() {
        let dir = crate::testing::TempDir::new("cold-grow");
        let store = Arc::new(ColdStore {
            filter_initial: 1_000,
            ..Arc::into_inner(ColdStore::open(&dir, 1_000_000).unwrap()).unwrap()
        });
        let mut tier = store.shard(0, &ColdState::default()).unwrap();
        let key = |stan| hold(stan, 0).key;
        let record = Record::new(hold(0, 0).card, Kind::Purchase, 1);
        let mut version = 0;
        for stan in 0..20_000u32 {
            tier.insert_new(&key(stan), &record);
            if stan % 3 == 0 && stan > 0 {
                assert!(tier.remove(&key(stan - 1)).is_some());
            }
            if stan % 100 == 99 {
                version += 1;
                tier.commit(version);
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
        version += 1;
        tier.commit(version);
        tier.flush();
        assert!(tier.filters_grown >= 2, "no grown copy was taken in");
        assert!(tier.filter.as_ref().unwrap().capacity() > 10_000);
        for stan in 0..20_000u32 {
            let removed = stan % 3 == 2;
            assert_eq!(tier.get(&key(stan)).is_some(), !removed, "stan {stan}");
        }
        drop(tier);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// What a read ahead found is used until the key is written: a write between the read's
    /// start and its value's arrival makes the value stale, and the write is what lookups find.
    #[test]
    fn a_value_read_ahead_is_dropped_if_the_key_was_written_meanwhile() {
        let dir = crate::testing::TempDir::new("cold-ahead");
        let store = ColdStore::open(&dir, 1_000).unwrap();
        let mut tier = store.shard(0, &ColdState::default()).unwrap();
        let (a, b) = (hold(1, 0).key, hold(2, 0).key);
        let record = |amount| Record::new(hold(0, 0).card, Kind::Authorization, amount);
        tier.insert_new(&a, &record(100));
        tier.insert_new(&b, &record(200));
        tier.commit(1);
        tier.flush();
        tier.forget_written();
        assert!(
            tier.would_read(&a, true),
            "written, forgotten: on disk only"
        );
        let reader = tier.reader().unwrap();
        // Read ahead with no write meanwhile: the value found is what lookups find.
        tier.fetch_started(&a);
        let found = reader(&a).unwrap();
        let mut other = Vec::new();
        format::encode_transaction(&record(999), &mut other);
        tier.fetched(&a, Ok(Some(other)));
        assert!(!tier.would_read(&a, true));
        assert_eq!(
            tier.get(&a),
            Some(record(999)),
            "the value read ahead is used"
        );
        tier.forget_fetched(&a);
        assert_eq!(tier.get(&a), Some(record(100)));
        assert!(found.is_some());
        // Written between the read's start and its value: the value is dropped.
        tier.fetch_started(&b);
        let stale = reader(&b).unwrap();
        tier.put(&b, &record(150));
        tier.commit(2);
        tier.fetched(&b, Ok(stale));
        assert_eq!(tier.get(&b), Some(record(150)));
        tier.flush();
        tier.forget_written();
        assert_eq!(
            tier.get(&b),
            Some(record(150)),
            "from the store, not the stale value"
        );
        // Removed meanwhile: found nowhere.
        tier.fetch_started(&a);
        let stale = reader(&a).unwrap();
        assert_eq!(tier.remove(&a), Some(record(100)));
        tier.commit(3);
        tier.flush();
        tier.forget_written();
        tier.fetched(&a, Ok(stale));
        assert_eq!(
            tier.get(&a),
            None,
            "removed from the store, not the stale value"
        );
        // A failed read ahead fails the store.
        tier.fetch_started(&b);
        tier.fetched(&b, Err("disk on fire".into()));
        assert!(tier.failure().unwrap().contains("disk on fire"));
        drop(tier);
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
