//! Start-up state: the newest valid snapshot (or, without one, the genesis accounts from
//! configuration), then the log applied again on top, each entry checked against the outcome
//! the log says was sent. A shard's entries before its snapshot marker are already in the
//! snapshot: for them only the answers are put back, for retransmissions.
//!
//! The switch is not ready (no listener accepts) until this is done. A torn tail is truncated
//! and logged; corruption before the tail, or a replayed outcome that differs from the logged
//! one, refuses to start: the log and the state it would build disagree, and guessing would
//! risk money.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::acquirer::idempotency::IdempotencyStore;
use crate::config::{AccountOverride, Settings};
use crate::domain::{CardToken, Outcome, Posting, Tokenizer, TxnKey};
use crate::ledger::cold::ColdStore;
use crate::ledger::{Account, Expiry, ExpiryStep, LedgerShard, ShardImage, reshard, shard_of};
use crate::limits::{RESHARD_IN_MEMORY_MAX, SPILL_PIECE};

/// Where the transactions beyond the hot windows are kept, inside the WAL directory (whose
/// lock covers it): derived from the log, and moved with it.
pub const COLD_DIR: &str = "cold";
/// Where the answers the idempotency table let go of early are kept ([`crate::acquirer::archive`]).
pub const ANSWERS_DIR: &str = "answers";
use crate::limits::{REPLAY_BATCH, REPLAY_BATCHES_QUEUED};
use crate::wal::format::{self, Entry, SnapshotSection};
use crate::wal::scan::{self, Mode, ScanReport};
use crate::wal::snapshot;

/// How often replay logs its progress.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);
/// A typical Applied record on disk, to size the transaction tables before replay.
const APPROXIMATE_RECORD_BYTES: u64 = 90;

/// One entry's work for the shard that owns its card.
enum Work {
    Apply {
        lsn: u64,
        posting: Posting,
        at_seconds: u64,
        outcome: Outcome,
        /// Written under the money rules before issue 8 (see `format::written_under_earlier_rules`).
        earlier_rules: bool,
    },
    Release {
        lsn: u64,
        card: CardToken,
        key: TxnKey,
    },
    Expire {
        lsn: u64,
        step: ExpiryStep,
        done: Expiry,
    },
    Open {
        lsn: u64,
        card: CardToken,
        account: Account,
    },
    Block {
        lsn: u64,
        card: CardToken,
        blocked: bool,
    },
}

struct Replay {
    shards: Vec<LedgerShard>,
    report: ScanReport,
    replayed: u64,
    restored: u64,
    remote: RemoteBook,
}

/// Puts back the answers of the log within the retention, oldest first, for retransmissions
/// after the start. They depend on nothing the snapshot holds, so this runs on a thread of its
/// own while the snapshot loads and the store opens (bench/RESULTS.md, "the worst restart").
///
/// It changes nothing on disk and stops at the first record that does not read whole: what
/// follows is either a torn tail, which replay truncates (so none of it was answered), or
/// corruption, on which replay refuses to start. Either way it puts back exactly the answers
/// of the records replay keeps. `stop` ends it early when the start failed elsewhere. Also
/// says where the first entry not about the ledger alone is (about an issuer, or unknown):
/// replay need not read the log before it and before every snapshot marker.
fn restore_answers(
    dir: &Path,
    retention: u64,
    now_seconds: u64,
    idempotency: &IdempotencyStore,
    stop: &AtomicBool,
) -> Result<(ScanReport, Option<u64>), String> {
    let mut first_issuers = None;
    let report = scan::scan(dir, Mode::Verify, |lsn, payload| {
        if stop.load(Ordering::Relaxed) {
            return Err("the start failed".to_owned());
        }
        // Also an entry this build does not know: replay decodes it, and refuses it.
        if !format::ledger_only(payload) {
            first_issuers.get_or_insert(lsn);
        }
        if !format::carries_answer(payload) {
            return Ok(());
        }
        let (key, at_seconds, fingerprint, outcome) =
            match format::decode_entry(payload).map_err(|e| e.to_string())? {
                Entry::Applied {
                    posting,
                    at_seconds,
                    fingerprint,
                    outcome,
                } => (posting.key, at_seconds, fingerprint, outcome),
                Entry::Remote {
                    key,
                    at_seconds,
                    fingerprint,
                    outcome,
                    ..
                } => (key, at_seconds, fingerprint, outcome),
                _ => return Ok(()),
            };
        if now_seconds.saturating_sub(at_seconds) < retention {
            idempotency.restore(key, fingerprint, outcome, at_seconds);
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    Ok((report, first_issuers))
}

/// Applies one shard's entries, checking each outcome against the logged one.
fn replay_shard(
    mut shard: LedgerShard,
    batches: crossbeam_channel::Receiver<Vec<Work>>,
    failed: &AtomicBool,
) -> Result<(LedgerShard, u64), String> {
    let mut replayed = 0;
    for batch in batches {
        for work in batch {
            let problem = match work {
                Work::Apply { lsn, posting, at_seconds, outcome, earlier_rules } => {
                    let trusted = outcome.code.is_approved() && !earlier_rules;
                    let again = shard.replay(&posting, at_seconds, trusted);
                    replayed += 1;
                    ((again.code, again.balances) != (outcome.code, outcome.balances)).then(|| {
                        let cause = if earlier_rules {
                            "the entry was written by an earlier release, whose rules for completions and reversals \
                             differ: start that release once more, let it write a snapshot (wal.snapshot_interval_seconds) \
                             and stop it, so that no entry of its after the snapshot needs replaying"
                        } else {
                            "the log was written on another genesis (demo data, ledger.token_key or ledger limits \
                             changed?): start with the configuration it was written with. Moving the WAL directory \
                             aside starts from the configured demo data and discards every balance in the log"
                        };
                        format!(
                            "entry at LSN {lsn}: replay gave {} {:?} where the log says {} {:?}: {cause}",
                            again.code.as_str(),
                            again.balances,
                            outcome.code.as_str(),
                            outcome.balances
                        )
                    })
                }
                Work::Release { lsn, card, key } => (!shard.release_expired(&key))
                    .then(|| format!("entry at LSN {lsn} releases a hold of {card} that replay does not have open")),
                Work::Open { lsn, card, account } => (!shard.open(card, account))
                    .then(|| format!("entry at LSN {lsn} opens an account for {card} that replay has already")),
                Work::Block { lsn, card, blocked } => (!shard.set_blocked(&card, blocked))
                    .then(|| format!("entry at LSN {lsn} blocks or unblocks {card}, which has no account in replay")),
                Work::Expire { lsn, step, done } => {
                    let again = shard.expire_step(&step);
                    (again != done).then(|| {
                        format!("entry at LSN {lsn}: expiry replayed as {again:?} where the log says {done:?}")
                    })
                }
            };
            // A failed read of the store finds nothing, which would look like another genesis.
            let problem = match shard.cold_failure() {
                Some(failure) => Some(format!(
                    "{failure}: stop, check the disk, and start again (the log and the snapshot are untouched)"
                )),
                None => problem,
            };
            if let Some(problem) = problem {
                failed.store(true, Ordering::Relaxed);
                return Err(problem);
            }
        }
    }
    Ok((shard, replayed))
}

/// Replays the log on `shards`, one thread per shard: the scanning thread checks and decodes
/// records and hands each shard its entries in batches, in log order.
fn replay(
    settings: &Settings,
    shards: Vec<LedgerShard>,
    (markers, from_lsn): (&[u64], u64),
    remote: RemoteBook,
    idempotency: &IdempotencyStore,
    now_seconds: u64,
) -> anyhow::Result<Replay> {
    let dir = &settings.wal.dir;
    let count = shards.len();
    let retention = settings.limits.idempotency_retention_seconds;
    // The shard whose marker decides whether an entry is already in the snapshot.
    let covered = |card: &CardToken, lsn: u64| lsn < markers[shard_of(card, markers.len())];
    let first_marker = markers.iter().copied().min().unwrap_or(0);
    let failed = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let mut senders = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for shard in shards {
            let (sender, receiver) = crossbeam_channel::bounded(REPLAY_BATCHES_QUEUED);
            let failed = &failed;
            threads.push(scope.spawn(move || replay_shard(shard, receiver, failed)));
            senders.push(sender);
        }
        let mut batches: Vec<Vec<Work>> = (0..count)
            .map(|_| Vec::with_capacity(REPLAY_BATCH))
            .collect();
        let push = |batches: &mut Vec<Vec<Work>>, shard: usize, work: Work| {
            batches[shard].push(work);
            if batches[shard].len() >= REPLAY_BATCH {
                let full = std::mem::replace(&mut batches[shard], Vec::with_capacity(REPLAY_BATCH));
                // A shard thread that stopped has set `failed`; the scan stops next record.
                let _ = senders[shard].send(full);
            }
        };
        let mut remote = remote;
        let mut last_progress = Instant::now();
        let scanned = scan::scan_from(dir, Mode::Recover, from_lsn, |lsn, payload| {
            if failed.load(Ordering::Relaxed) {
                return Err("replay stopped".to_owned());
            }
            // Before every marker, the snapshot holds what an entry did to the ledger, and
            // its answer was put back already ([`restore_answers`]): only the issuers' book
            // needs it. Not decoding the rest is most of this scan after a long run.
            if lsn < first_marker && format::ledger_only(payload) {
                return Ok(());
            }
            match format::decode_entry(payload).map_err(|e| e.to_string())? {
                Entry::Applied {
                    posting,
                    at_seconds,
                    outcome,
                    ..
                } => {
                    if !covered(&posting.card, lsn) {
                        push(
                            &mut batches,
                            shard_of(&posting.card, count),
                            Work::Apply {
                                lsn,
                                posting,
                                at_seconds,
                                outcome,
                                earlier_rules: format::written_under_earlier_rules(payload),
                            },
                        );
                    }
                }
                Entry::Expire {
                    shard,
                    shards,
                    step,
                    done,
                } => {
                    // Already in the snapshot (which may be of another shard count): skipped
                    // before anything about its shard is checked.
                    if lsn < first_marker {
                        return Ok(());
                    }
                    if shards as usize != count {
                        return Err(format!(
                            "entry at LSN {lsn} was written with {shards} shards, and replay runs {count}: \
                             start with ledger.shards = {shards} (a snapshot taken then allows changing it)"
                        ));
                    }
                    let shard = shard as usize;
                    if shard >= count {
                        return Err(format!("entry at LSN {lsn} names shard {shard} of {count}"));
                    }
                    if lsn >= markers[shard] {
                        push(&mut batches, shard, Work::Expire { lsn, step, done });
                    }
                }
                Entry::AccountOpened { card, account, .. } => {
                    if !covered(&card, lsn) {
                        push(
                            &mut batches,
                            shard_of(&card, count),
                            Work::Open { lsn, card, account },
                        );
                    }
                }
                Entry::AccountBlocked { card, blocked, .. } => {
                    if !covered(&card, lsn) {
                        push(
                            &mut batches,
                            shard_of(&card, count),
                            Work::Block { lsn, card, blocked },
                        );
                    }
                }
                Entry::Remote {
                    issuer,
                    key,
                    outcome,
                    sent,
                    advices,
                    original,
                    ..
                } => {
                    if let Some((_, stan)) = sent
                        && let Some(u) = remote.unanswered.remove(&(issuer.clone(), key, stan))
                    {
                        remote.by_reversal.remove(&u.reversal.id);
                    }
                    let covered = remote.covered(&issuer, lsn);
                    // Marked even if covered: the snapshot may predate the approval it marks
                    // (a reversal that overtook its original's answer); marking twice is
                    // harmless.
                    if let Some(original) = original {
                        remote.reverse(original);
                    }
                    if let Some((mti, stan)) = sent
                        && outcome.code.is_approved()
                        && !covered
                    {
                        // The channels remember this many at most; so does recovery.
                        if remote.sent.len() >= remote.keep {
                            let half = remote.keep / 2;
                            remote.sent.drain(..half);
                        }
                        remote.sent.push((issuer, key, mti, stan));
                    }
                    // A record about the request itself that queues its reversal decides it (a
                    // stand-in approval after a timeout names its 0120 in `sent`). An
                    // acquirer's reversal that queued it (under its own key) does not: the
                    // request's decision is still to come.
                    for advice in &advices {
                        if let Some(request) = remote.by_reversal.get(&advice.id)
                            && request.1 == key
                        {
                            let request = request.clone();
                            remote.by_reversal.remove(&advice.id);
                            remote.unanswered.remove(&request);
                        }
                    }
                    for advice in advices {
                        remote.advices.insert(advice.id, (lsn, advice));
                    }
                }
                Entry::AdviceDone { id, .. } => {
                    remote.advices.remove(&id);
                    // The reversal of a request still undecided was delivered already.
                    if let Some(request) = remote.by_reversal.get(&id)
                        && let Some(u) = remote.unanswered.get_mut(request)
                    {
                        u.reversal_done = true;
                    }
                }
                Entry::RemoteSent {
                    at_seconds,
                    issuer,
                    key,
                    fingerprint,
                    sent: (mti, stan),
                    reversal,
                } => {
                    remote
                        .by_reversal
                        .insert(reversal.id, (issuer.clone(), key, stan));
                    remote.unanswered.insert(
                        (issuer, key, stan),
                        Unanswered {
                            lsn,
                            at_seconds,
                            fingerprint,
                            mti,
                            reversal,
                            reversal_done: false,
                        },
                    );
                }
                Entry::Expired { holds, .. } => {
                    for (card, key) in holds {
                        if !covered(&card, lsn) {
                            push(
                                &mut batches,
                                shard_of(&card, count),
                                Work::Release { lsn, card, key },
                            );
                        }
                    }
                }
            }
            // The clock is read once per 4,096 records, not per record (4% of this thread).
            if lsn % 4_096 == 0 && last_progress.elapsed() >= PROGRESS_INTERVAL {
                last_progress = Instant::now();
                tracing::info!(lsn, "recovery in progress");
            }
            Ok(())
        });
        for (sender, batch) in senders.iter().zip(batches) {
            if !batch.is_empty() {
                let _ = sender.send(batch);
            }
        }
        drop(senders);
        let mut shards = Vec::with_capacity(count);
        let mut replayed = 0;
        let mut problem = None;
        for thread in threads {
            match thread.join() {
                Ok(Ok((shard, n))) => {
                    shards.push(shard);
                    replayed += n;
                }
                Ok(Err(error)) => problem = Some(error),
                Err(_) => problem = Some("a replay thread panicked".to_owned()),
            }
        }
        // A shard's own error says more than the scan's "replay stopped".
        if let Some(problem) = problem {
            bail!(
                "cannot recover from the WAL in {}: {problem}",
                dir.display()
            );
        }
        let report =
            scanned.with_context(|| format!("cannot recover from the WAL in {}", dir.display()))?;
        let unanswered = remote.settle();
        // Their retransmissions get 91: the switch answered nothing, and each one's reversal
        // is on its way to the issuer.
        for settled in &remote.settled {
            if now_seconds.saturating_sub(settled.at_seconds) < retention {
                idempotency.restore(
                    settled.key,
                    settled.fingerprint,
                    crate::domain::Outcome::decline(crate::domain::ResponseCode::IssuerUnavailable),
                    settled.at_seconds,
                );
            }
        }
        if unanswered > 0 {
            tracing::warn!(
                unanswered,
                "requests were outstanding at remote issuers when the switch stopped: their reversals are queued"
            );
        }
        Ok(Replay {
            shards,
            report,
            replayed,
            // What the table holds now: the newest answers within the retention.
            restored: u64::try_from(idempotency.len()).unwrap_or(u64::MAX),
            remote,
        })
    })
}

/// The genesis accounts of each shard, keyed by card token.
pub fn genesis(settings: &Settings, tokenizer: &Tokenizer) -> anyhow::Result<Vec<LedgerShard>> {
    let mut accounts: Vec<Vec<(CardToken, Account)>> = vec![Vec::new(); settings.shards];
    if let Some(demo) = &settings.demo {
        let per_shard = usize::try_from(demo.count).unwrap_or(0) / settings.shards + 1;
        for shard in &mut accounts {
            shard.reserve(per_shard + per_shard / 8);
        }
        let overrides: HashMap<u64, &AccountOverride> =
            demo.overrides.iter().map(|o| (o.index, o)).collect();
        let balance = i64::try_from(demo.balance).context("demo.balance is too large")?;
        for index in 0..demo.count {
            let pan = demo
                .pan(index)
                .with_context(|| format!("demo account {index} has no valid PAN"))?;
            let mut account = Account::new(balance, demo.currency);
            if let Some(o) = overrides.get(&index) {
                if let Some(b) = o.balance {
                    account.ledger =
                        i64::try_from(b).context("demo override balance is too large")?;
                }
                account.blocked = o.blocked;
                account.limit_per_transaction = o.limit_per_transaction;
            }
            let card = tokenizer.token(&pan);
            accounts[shard_of(&card, settings.shards)].push((card, account));
        }
    }
    Ok(accounts
        .into_iter()
        .enumerate()
        .map(|(index, accounts)| {
            let mut shard = LedgerShard::new(
                u32::try_from(index).unwrap_or(u32::MAX),
                settings.shard_limits,
            );
            shard.reserve_accounts(accounts.len());
            for (card, account) in accounts {
                shard.open_account(card, account);
            }
            shard
        })
        .collect())
}

/// Shards 0, 1, … from their images, with the configured limits, each with its part of the
/// store on disk rolled back to the image's version. Side by side, up to one shard per core:
/// building a shard's tables and rolling back its part of the store (seconds each after a long
/// run) need nothing from the other shards.
fn shards_from(
    images: Vec<ShardImage>,
    settings: &Settings,
    cold: Option<&Arc<ColdStore>>,
) -> anyhow::Result<Vec<LedgerShard>> {
    // Every shard's part of the store checked first: a rollback is not undone, so none starts
    // while another shard's part cannot go back to its snapshot.
    if let Some(cold) = cold {
        for (i, image) in images.iter().enumerate() {
            cold.check_rollback(u32::try_from(i).unwrap_or(u32::MAX), image.cold.version)?;
        }
    }
    let count = images.len();
    let workers = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(count);
    let images: Vec<std::sync::Mutex<Option<ShardImage>>> = images
        .into_iter()
        .map(|image| std::sync::Mutex::new(Some(image)))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let (mut built, spawned) = std::thread::scope(|scope| {
        let work = || {
            let mut built = Vec::new();
            // No new shard once one failed: the start fails anyway.
            while !failed.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(slot) = images.get(i) else {
                    break;
                };
                let Some(image) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() else {
                    continue;
                };
                let shard = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    shard_from(i, image, settings, cold)
                }))
                .unwrap_or_else(|panic| {
                    Err(anyhow::anyhow!(
                        "loading shard {i} from the snapshot panicked: {}",
                        crate::panic_message(&*panic)
                    ))
                });
                if shard.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                built.push((i, shard));
            }
            built
        };
        let mut handles = Vec::new();
        let mut spawned = Ok(());
        for worker in 0..workers {
            match std::thread::Builder::new()
                .name(format!("recover-shards-{worker}"))
                .spawn_scoped(scope, work)
            {
                Ok(handle) => handles.push(handle),
                Err(error) => {
                    failed.store(true, Ordering::Relaxed);
                    spawned = Err(error);
                    break;
                }
            }
        }
        let built: Vec<(usize, anyhow::Result<LedgerShard>)> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect();
        (built, spawned)
    });
    spawned.context("cannot start a thread that loads shards from the snapshot")?;
    built.sort_by_key(|(i, _)| *i);
    let loaded = built.len();
    // The first failure by shard, as one after the other would have reported it.
    let shards = built
        .into_iter()
        .map(|(_, shard)| shard)
        .collect::<anyhow::Result<Vec<_>>>()?;
    if loaded != count {
        bail!("{loaded} of {count} shards were loaded from the snapshot");
    }
    Ok(shards)
}

/// Shard `i` from its image (see [`shards_from`]).
fn shard_from(
    i: usize,
    mut image: ShardImage,
    settings: &Settings,
    cold: Option<&Arc<ColdStore>>,
) -> anyhow::Result<LedgerShard> {
    let index = u32::try_from(i).unwrap_or(u32::MAX);
    let state = image.cold;
    if cold.is_none() && state.count == 0 {
        // Nothing on disk but queue entries of transactions already gone: without a
        // store, they are dropped, and a store enabled later starts empty.
        image.cold = crate::ledger::ColdState::default();
    }
    let shard = LedgerShard::from_image(index, settings.shard_limits, image);
    Ok(match cold {
        Some(cold) => shard.with_cold(Box::new(cold.shard(index, &state)?)),
        None => {
            if state.count > 0 {
                bail!(
                    "the snapshot puts {} transactions of shard {index} on disk, and \
                     ledger.hot_transactions_per_shard_max = 0 keeps none there: set it as it was",
                    state.count
                );
            }
            shard
        }
    })
}

/// Holds the WAL directory's lock for as long as it lives.
#[derive(Debug)]
pub struct DirectoryLock(#[allow(dead_code)] fs::File);

/// Creates the WAL directory if needed and takes its lock: two switches on one log would
/// interleave records.
pub fn lock_directory(dir: &Path) -> anyhow::Result<DirectoryLock> {
    fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create the WAL directory {} (wal.dir)",
            dir.display()
        )
    })?;
    let path = dir.join("LOCK");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(DirectoryLock(file)),
        Err(fs::TryLockError::WouldBlock) => {
            bail!(
                "the WAL directory {} is in use by another switch process",
                dir.display()
            )
        }
        Err(fs::TryLockError::Error(error)) => {
            Err(error).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

#[derive(Debug)]
pub struct Recovered {
    pub shards: Vec<LedgerShard>,
    pub report: ScanReport,
    /// The snapshot recovery started from, if any.
    pub snapshot: Option<PathBuf>,
    /// The LSN the newest snapshot covers the log up to (its lowest marker; 0 without one):
    /// what a restart now would replay starts there, and the snapshot timer counts from it.
    pub snapshot_lsn: u64,
    /// Entries applied on top of the snapshot (or genesis).
    pub replayed: u64,
    pub idempotency_restored: u64,
    pub elapsed: Duration,
    /// Remote issuers' business still open in the log: queued advices not acknowledged nor
    /// given up, and the requests sent to issuers (for reversals and completions of them).
    pub remote: RemoteBook,
    /// The transactions beyond the hot windows, on disk (none if `ledger.
    /// hot_transactions_per_shard_max` is 0).
    pub cold: Option<Arc<ColdStore>>,
}

/// What the log says about remote issuers (see [`Recovered::remote`]).
#[derive(Debug, Default)]
pub struct RemoteBook {
    /// Queued advices by id, with the LSN of the record that queued them.
    pub advices: std::collections::BTreeMap<u128, (u64, format::Advice)>,
    /// Requests the switch sent to an issuer and had approved (or approved in stand-in), in
    /// log order: issuer, the acquirer's key, the MTI and field 11 the switch sent.
    pub sent: Vec<(String, TxnKey, [u8; 4], u32)>,
    /// Remote originals already reversed (by the acquirer, or by recovery below), by the
    /// acquirer's key and the switch's field 11.
    pub reversed: HashSet<(TxnKey, u32)>,
    /// Requests logged as sent with no decision logged, by issuer, key and field 11.
    unanswered: HashMap<(String, TxnKey, u32), Unanswered>,
    /// Those of them still unanswered at the end of the log, which the channels close (a 91
    /// with the reversal queued) once they start.
    pub settled: Vec<Settled>,
    /// The unanswered requests by the id of their reversal.
    by_reversal: HashMap<u128, (String, TxnKey, u32)>,
    /// Each issuer's snapshot marker: its records before it are in `sent` and `reversed`
    /// already (from the snapshot's part).
    markers: HashMap<String, u64>,
    /// Approvals kept at most while replaying: what the channels remember in all, twice.
    keep: usize,
}

/// A request logged as sent (`RemoteSent`).
#[derive(Debug)]
struct Unanswered {
    lsn: u64,
    at_seconds: u64,
    fingerprint: u64,
    mti: [u8; 4],
    reversal: format::Advice,
    /// Its reversal was acknowledged (or given up) already.
    reversal_done: bool,
}

/// A request sent to an issuer with no decision logged: the channel logs one (91, the
/// reversal queued) when it starts, and lets go of the `RemoteSent` record at `lsn` then.
#[derive(Clone, Debug)]
pub struct Settled {
    pub issuer: String,
    pub key: TxnKey,
    pub at_seconds: u64,
    pub fingerprint: u64,
    pub mti: [u8; 4],
    pub stan: u32,
    pub reversal: format::Advice,
    /// Whether the reversal is queued (or was delivered) already: an acquirer's reversal that
    /// overtook the answer queued it.
    pub reversal_queued: bool,
    pub lsn: u64,
}

impl RemoteBook {
    /// The book as of a snapshot's issuer parts.
    fn from_snapshot(parts: Vec<format::RemotePart>) -> RemoteBook {
        let mut book = RemoteBook::default();
        for part in parts {
            for o in part.originals {
                book.sent.push((part.issuer.clone(), o.key, o.mti, o.stan));
                if o.reversed {
                    book.reversed.insert((o.key, o.stan));
                }
            }
            book.markers.insert(part.issuer, part.marker_lsn);
        }
        book
    }

    /// Whether the record at `lsn` of `issuer` is in the snapshot's part already.
    fn covered(&self, issuer: &str, lsn: u64) -> bool {
        self.markers.get(issuer).is_some_and(|&marker| lsn < marker)
    }

    /// The issuers' parts of a snapshot taken now, at `marker_lsn`.
    pub fn parts(&self, marker_lsn: u64) -> Vec<format::RemotePart> {
        let mut parts: HashMap<&str, Vec<format::RemoteOriginal>> = HashMap::new();
        for (issuer, key, mti, stan) in &self.sent {
            parts
                .entry(issuer)
                .or_default()
                .push(format::RemoteOriginal {
                    key: *key,
                    mti: *mti,
                    stan: *stan,
                    reversed: self.reversed.contains(&(*key, *stan)),
                });
        }
        parts
            .into_iter()
            .map(|(issuer, originals)| format::RemotePart {
                issuer: issuer.to_owned(),
                marker_lsn,
                originals,
            })
            .collect()
    }

    /// Marks the approval sent under `stan` for `key` reversed; bounded by `keep`, dropping
    /// the marks of approvals no longer kept when full.
    fn reverse(&mut self, (key, stan): (TxnKey, u32)) {
        if self.reversed.len() >= self.keep {
            let kept: HashSet<(TxnKey, u32)> =
                self.sent.iter().map(|(_, k, _, s)| (*k, *s)).collect();
            self.reversed.retain(|r| kept.contains(r));
        }
        if self.reversed.len() < self.keep {
            self.reversed.insert((key, stan));
        }
    }

    /// After the whole log: a request sent with no decision logged was outstanding at the
    /// crash. The acquirer never heard an answer, and the issuer may have approved it: it is
    /// settled as 91 with its reversal (logged by its channel once started), and counts as
    /// reversed. Returns how many.
    fn settle(&mut self) -> usize {
        let unanswered = std::mem::take(&mut self.unanswered);
        let count = unanswered.len();
        let mut settled: Vec<Settled> = unanswered
            .into_iter()
            .map(|((issuer, key, stan), u)| Settled {
                issuer,
                key,
                at_seconds: u.at_seconds,
                fingerprint: u.fingerprint,
                mti: u.mti,
                stan,
                reversal_queued: self.advices.contains_key(&u.reversal.id) || u.reversal_done,
                reversal: u.reversal,
                lsn: u.lsn,
            })
            .collect();
        settled.sort_by_key(|s| s.lsn);
        for s in &settled {
            self.sent.push((s.issuer.clone(), s.key, s.mti, s.stan));
            self.reverse((s.key, s.stan));
        }
        self.settled = settled;
        count
    }
}

/// Snapshot (or genesis) plus the log in `settings.wal.dir`, replayed; fills `idempotency` with
/// the answers still within their retention at `now_seconds`.
pub fn recover(
    settings: &Settings,
    tokenizer: &Tokenizer,
    idempotency: &IdempotencyStore,
    now_seconds: u64,
) -> anyhow::Result<Recovered> {
    let started = Instant::now();
    let dir = &settings.wal.dir;
    let retention = settings.limits.idempotency_retention_seconds;
    let stop = AtomicBool::new(false);
    /// Stops the answers' scan when recovery ends without waiting for it (an error, a panic).
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let recovered = std::thread::scope(|scope| {
        let answers = std::thread::Builder::new()
            .name("recover-answers".to_owned())
            .spawn_scoped(scope, || {
                let started = Instant::now();
                // A panic becomes the start's error here, rather than the scope's panic
                // after recovery failed for another reason (which would hide that reason).
                let report = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    restore_answers(dir, retention, now_seconds, idempotency, &stop)
                }))
                .unwrap_or_else(|_| Err("the thread putting answers back panicked".to_owned()));
                (report, started.elapsed())
            })
            .context("cannot start the thread that puts answers back")?;
        let stopping = StopOnDrop(&stop);
        let recovered = recover_in(
            settings,
            tokenizer,
            idempotency,
            now_seconds,
            (scope, answers),
        );
        drop(stopping);
        recovered
    });
    // The answers put back beyond the table's room are written to disk meanwhile, on a thread
    // of their own: all findable before the switch answers anything. After the scope, so that
    // nothing hands it more.
    let finished = idempotency.finish_restore().with_context(|| {
        format!(
            "cannot keep on disk the answers within the retention that the idempotency table cannot hold, in {}: \
             a retransmission of those requests would be processed anew. Free the disk, or set \
             limits.idempotency_archive_entries_max = 0 to start without them",
            dir.join(ANSWERS_DIR).display()
        )
    });
    let mut recovered = recovered?;
    finished?;
    recovered.elapsed = started.elapsed();
    Ok(recovered)
}

/// What puts the answers back: its report and how long it took.
type Answers<'scope> =
    std::thread::ScopedJoinHandle<'scope, (Result<(ScanReport, Option<u64>), String>, Duration)>;

fn recover_in<'scope, 'env>(
    settings: &'env Settings,
    tokenizer: &Tokenizer,
    idempotency: &IdempotencyStore,
    now_seconds: u64,
    (scope, answers): (&'scope std::thread::Scope<'scope, 'env>, Answers<'scope>),
) -> anyhow::Result<Recovered> {
    let started = Instant::now();
    let dir = &settings.wal.dir;
    let keys_max = u64::try_from(settings.shard_limits.transactions_max).unwrap_or(u64::MAX);
    let cold_dir = dir.join(COLD_DIR);
    // The store opens (fjall replays its journals) while the snapshot loads: they are
    // independent, and each takes seconds after a long run. Only when there is a snapshot to
    // start from: without one, the store is emptied rather than opened.
    let with_store = settings.shard_limits.hot_max > 0;
    let opening = if with_store && snapshot::list(dir).is_ok_and(|found| !found.is_empty()) {
        let cold_dir = cold_dir.clone();
        Some(
            std::thread::Builder::new()
                .name("recover-store".to_owned())
                .spawn_scoped(scope, move || {
                    std::panic::catch_unwind(|| ColdStore::open(&cold_dir, keys_max))
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("opening the store panicked")))
                })
                .context("cannot start the thread that opens the store")?,
        )
    } else {
        None
    };
    let mut found = snapshot::latest(dir)
        .with_context(|| format!("cannot read snapshots in {}", dir.display()))?;
    for (path, problem) in &found.invalid {
        tracing::warn!(file = %path.display(), problem, "snapshot unusable; trying an older one");
    }
    let mut remote = RemoteBook::from_snapshot(std::mem::take(&mut found.remote));
    remote.keep = 2 * settings
        .issuers
        .iter()
        .map(|i| i.originals_max)
        .sum::<usize>()
        .max(1);
    let (images, markers, snapshot_path) = match found.snapshot {
        Some((path, sections)) => {
            let markers: Vec<u64> = sections.iter().map(|s| s.marker_lsn).collect();
            // Replayed with the shard count the log was written under (expiry is per shard);
            // resharded afterwards if the configuration changed it.
            let images: Vec<ShardImage> = sections.into_iter().map(|s| s.image).collect();
            tracing::info!(snapshot = %path.display(), elapsed = ?started.elapsed(), "snapshot loaded");
            (images, markers, Some(path))
        }
        None => {
            let images = genesis(settings, tokenizer)?
                .iter()
                .map(LedgerShard::image)
                .collect();
            (images, vec![0; settings.shards], None)
        }
    };
    let first_needed = markers.iter().copied().min().unwrap_or(0);
    let mut snapshot_lsn = first_needed;
    let last_marker = markers.iter().copied().max().unwrap_or(0);
    // A log pruned behind a snapshot cannot be replayed from anything older than it.
    let segments =
        scan::segments(dir).with_context(|| format!("cannot read the WAL in {}", dir.display()))?;
    if let Some(first_lsn) = segments
        .first()
        .and_then(|(_, path)| scan::first_lsn_of(path))
        && first_lsn > first_needed
    {
        bail!(
            "cannot recover from the WAL in {}: the log starts at LSN {first_lsn}, and no valid snapshot covers what came before it",
            dir.display()
        );
    }
    // Only now, with the log known to follow the snapshot (or genesis), is the store on disk
    // rolled back to it (emptied for genesis: nothing on disk is older than the log).
    let opened = match opening {
        Some(thread) => Some(
            thread
                .join()
                .map_err(|_| anyhow::anyhow!("the thread opening the store panicked"))?,
        ),
        None => None,
    };
    let cold = if with_store {
        Some(match (&snapshot_path, opened) {
            (Some(_), Some(store)) => store?,
            (Some(_), None) => ColdStore::open(&cold_dir, keys_max)?,
            // Every snapshot file was unusable: a start from genesis, and nothing on disk is
            // older than the log. A store that did not open is made anew, as without any.
            (None, Some(Ok(store))) => {
                store.clear()?;
                store
            }
            (None, Some(Err(_)) | None) => ColdStore::create_empty(&cold_dir, keys_max)?,
        })
    } else {
        None
    };
    let mut shards = shards_from(images, settings, cold.as_ref())?;
    if cold.is_some() {
        tracing::info!(elapsed = ?started.elapsed(), "store of transactions on disk opened at the snapshot's version");
    }
    // Every record of the log may hold a transaction: size the tables once instead of
    // rehashing them as replay grows them.
    let log_bytes: u64 = segments
        .iter()
        .filter_map(|(_, path)| fs::metadata(path).ok())
        .map(|m| m.len())
        .sum();
    let per_shard = usize::try_from(log_bytes / APPROXIMATE_RECORD_BYTES).unwrap_or(usize::MAX)
        / settings.shards.max(1);
    // With a store on disk, the whole hot window at once (its memory is what the
    // configuration sets): growing a table of millions stalls its shard for tens of ms.
    // All in memory: what the snapshot holds plus what the log may add (a total, as
    // `reserve_transactions` counts what is held).
    let in_memory = |shard: &LedgerShard| match cold {
        Some(_) => settings.shard_limits.hot_max + 2 * SPILL_PIECE,
        None => shard
            .hot_count()
            .saturating_add(per_shard)
            .min(settings.shard_limits.transactions_max),
    };
    for shard in &mut shards {
        let count = in_memory(shard);
        shard.reserve_transactions(count);
    }
    // Replay may truncate a torn tail that the answers' scan reads: it waits for it.
    let (answered, took) = answers
        .join()
        .map_err(|_| anyhow::anyhow!("the thread putting answers back panicked"))?;
    let (answered, first_issuers) = answered.map_err(|problem| {
        anyhow::anyhow!(
            "cannot recover from the WAL in {}: {problem}",
            dir.display()
        )
    })?;
    tracing::info!(
        records = answered.records,
        answers = idempotency.len(),
        took = ?took,
        elapsed = ?started.elapsed(),
        "answers within the retention put back"
    );
    // The segments wholly before every marker and every issuer's entry hold nothing replay
    // needs, and the answers' scan has just read them whole.
    let from_lsn = first_needed.min(first_issuers.unwrap_or(u64::MAX));
    let replay = replay(
        settings,
        shards,
        (&markers, from_lsn),
        remote,
        idempotency,
        now_seconds,
    )?;
    let (mut shards, mut report) = (replay.shards, replay.report);
    report.records = answered.records;
    // A write of the store fails on its own thread, after the change that made it: the last
    // ones of the replay are waited for here, so that a failed one stops the start.
    for shard in &shards {
        shard.cold_flush();
    }
    if let Some(failure) = shards.iter().find_map(LedgerShard::cold_failure) {
        bail!(
            "{failure}: replaying the log into the store failed; nothing was changed but the store, which the next start rolls back"
        );
    }
    if report.next_lsn < last_marker {
        bail!(
            "cannot recover from the WAL in {}: the snapshot covers records up to LSN {last_marker}, the log ends at {}",
            dir.display(),
            report.next_lsn
        );
    }
    if shards.len() != settings.shards {
        tracing::info!(
            from = shards.len(),
            to = settings.shards,
            "ledger.shards changed since the snapshot: resharding, and taking a snapshot of the new split"
        );
        // What is on disk is read back and split anew, when it fits in memory.
        let on_disk: u64 = shards.iter().map(|s| s.cold_state().count).sum();
        if on_disk > RESHARD_IN_MEMORY_MAX {
            bail!(
                "ledger.shards changed from {} to {} with {on_disk} transactions on disk, more than can be split \
                 anew in memory ({RESHARD_IN_MEMORY_MAX}): set ledger.shards = {} (the count the log was written with)",
                shards.len(),
                settings.shards,
                shards.len()
            );
        }
        let images: Vec<ShardImage> = shards.iter().map(LedgerShard::full_image).collect();
        // Nothing may be split anew, snapshotted and cleared that was not read back whole.
        if let Some(failure) = shards.iter().find_map(LedgerShard::cold_failure) {
            bail!(
                "{failure}: the shards cannot be split anew; set ledger.shards = {}",
                shards.len()
            );
        }
        let images = reshard(images, settings.shards);
        drop(shards);
        // The new split starts with nothing on disk: the snapshot below holds it all, and a
        // crash before the store is cleared rolls it back to nothing anyway (version 0).
        shards = images
            .into_iter()
            .enumerate()
            .map(|(i, image)| {
                LedgerShard::from_image(
                    u32::try_from(i).unwrap_or(u32::MAX),
                    settings.shard_limits,
                    image,
                )
            })
            .collect();
        // From here on the log is written with the new count: a snapshot at its start keeps
        // a later recovery from replaying the old count's expiry onto the new split.
        let sections: Vec<SnapshotSection> = shards
            .iter()
            .map(|shard| SnapshotSection {
                marker_lsn: report.next_lsn,
                image: shard.image(),
            })
            .collect();
        let remote = replay.remote.parts(report.next_lsn);
        snapshot_lsn = report.next_lsn;
        snapshot::write_with_remote(dir, &sections, &remote, now_seconds).with_context(|| {
            format!(
                "cannot write a snapshot of the new split in {}",
                dir.display()
            )
        })?;
        if let Some(cold) = &cold {
            cold.clear()?;
            shards = shards
                .into_iter()
                .map(|mut shard| {
                    let count = in_memory(&shard);
                    shard.reserve_transactions(count);
                    let tier = cold.shard(shard.index(), &shard.cold_state())?;
                    Ok(shard.with_cold(Box::new(tier)))
                })
                .collect::<anyhow::Result<_>>()?;
        }
    }
    if let Some(torn) = &report.torn_tail {
        tracing::warn!(
            file = %torn.file.display(),
            offset = torn.offset,
            bytes = torn.bytes,
            "WAL ended in a torn write (a crash mid-write): truncated; nothing in it had been answered"
        );
    }
    Ok(Recovered {
        shards,
        report,
        snapshot: snapshot_path,
        snapshot_lsn,
        replayed: replay.replayed,
        idempotency_restored: replay.restored,
        elapsed: started.elapsed(),
        remote: replay.remote,
        cold,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Kind, Posting, TxnKey};
    use crate::wal::format::{SegmentHeader, SnapshotSection, encode_entry, segment_file_name};
    use crate::wal::writer::{self, Disk, Submission, SyncMode, WriterConfig};
    use std::collections::BTreeMap;

    #[derive(Clone, Copy, Debug)]
    enum Snapshot {
        Absent,
        Valid,
        /// A newer snapshot file that does not read back; recovery must fall back.
        Corrupt,
    }

    fn settings(dir: &Path) -> Settings {
        let text = crate::config::EMBEDDED
            .replacen("shards = 0 ", "shards = 2 ", 1)
            .replacen("accounts = 1000000 ", "accounts = 40 ", 1)
            .replacen("segment_bytes = 67108864", "segment_bytes = 4096", 1)
            .replacen("group_records_max = 4096", "group_records_max = 4", 1);
        let mut settings = Settings::parse(&text, "test").unwrap();
        settings.wal.dir = dir.to_owned();
        settings
    }

    fn accounts(shards: &[LedgerShard]) -> BTreeMap<u128, Account> {
        shards
            .iter()
            .flat_map(|s| s.image().accounts)
            .map(|(card, account)| (card.hash, account))
            .collect()
    }

    /// Writes `records` postings through the real writer, snapshots after the first half as
    /// `snapshot` says, and returns what every account must be after recovery, with and without
    /// the last record.
    fn build(
        dir: &Path,
        snapshot: Snapshot,
        records: u32,
    ) -> (BTreeMap<u128, Account>, BTreeMap<u128, Account>) {
        build_after(dir, snapshot, records, None)
    }

    /// The real writer on `settings`' log, unsynced.
    fn test_writer(
        settings: &Settings,
    ) -> (
        writer::Wal<()>,
        std::thread::JoinHandle<writer::WriterStats>,
    ) {
        writer::start(
            WriterConfig {
                sync: SyncMode::None,
                ..settings.wal.clone()
            },
            Box::new(Disk),
            None,
            0,
            |(), _, _| {},
            |e| panic!("{e}"),
        )
        .unwrap()
    }

    /// Logs `payload` as the next record.
    fn log(wal: &writer::Wal<()>, payload: Vec<u8>) {
        assert!(wal.try_reserve());
        wal.submit(Submission {
            payload: Some(payload),
            completion: (),
        })
        .unwrap();
    }

    /// [`build`], with the payload `first` (if any) logged before the postings.
    fn build_after(
        dir: &Path,
        snapshot: Snapshot,
        records: u32,
        first: Option<Vec<u8>>,
    ) -> (BTreeMap<u128, Account>, BTreeMap<u128, Account>) {
        let settings = settings(dir);
        let tokenizer = Tokenizer::new(settings.token_key);
        let mut shards = genesis(&settings, &tokenizer).unwrap();
        let demo = settings.demo.clone().unwrap();
        let (wal, thread) = test_writer(&settings);
        let mut before_last = BTreeMap::new();
        let offset = u64::from(first.is_some());
        if let Some(payload) = first {
            log(&wal, payload);
        }
        for n in 0..records {
            if n == records / 2 && !matches!(snapshot, Snapshot::Absent) {
                let sections: Vec<SnapshotSection> = shards
                    .iter()
                    .map(|s| SnapshotSection {
                        marker_lsn: u64::from(n) + offset,
                        image: s.image(),
                    })
                    .collect();
                crate::wal::snapshot::write(dir, &sections, 0).unwrap();
            }
            if n + 1 == records {
                before_last = accounts(&shards);
            }
            let card = tokenizer.token(&demo.pan(u64::from(n % 40)).unwrap());
            let posting = Posting {
                kind: if n % 3 == 0 {
                    Kind::Authorization
                } else {
                    Kind::Purchase
                },
                card,
                amount: u64::from(1 + n % 50),
                currency: Some(840),
                key: TxnKey {
                    acquirer: 123_456,
                    terminal: *b"TERM0001",
                    stan: n,
                    transmission: 1_126_000_000,
                },
                original: None,
                replacement: None,
            };
            let outcome = shards[shard_of(&card, 2)].apply(&posting, 1_000);
            let mut payload = Vec::new();
            encode_entry(
                &Entry::Applied {
                    posting,
                    at_seconds: 1_000,
                    fingerprint: u64::from(n),
                    outcome,
                },
                &mut payload,
            );
            log(&wal, payload);
        }
        drop(wal);
        thread.join().unwrap();
        if let Snapshot::Corrupt = snapshot {
            // A newer snapshot, damaged: it must be passed over for the valid one or genesis.
            let newest = dir.join(format::snapshot_file_name(u64::from(records)));
            let mut bytes = fs::read(snapshot::list(dir).unwrap()[0].1.clone()).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0xFF;
            fs::write(newest, bytes).unwrap();
        }
        (accounts(&shards), before_last)
    }

    #[test]
    fn recovery_case_table() {
        let mut checked = 0;
        for snapshot in [Snapshot::Absent, Snapshot::Valid, Snapshot::Corrupt] {
            for torn in [false, true] {
                for boundary in [false, true] {
                    let name = format!("{snapshot:?}-{torn}-{boundary}");
                    let dir = crate::testing::TempDir::new(&format!("recovery-{name}"));
                    let (all, before_last) = build(&dir, snapshot, 120);
                    let segments = scan::segments(&dir).unwrap();
                    assert!(segments.len() > 2, "{name}: the log spans several segments");
                    let (last_sequence, last_path) = segments.last().unwrap().clone();
                    let next_lsn = 120u64;
                    match (torn, boundary) {
                        (false, false) => {}
                        // The last record cut short: it was never answered.
                        (true, false) => {
                            let len = fs::metadata(&last_path).unwrap().len();
                            fs::OpenOptions::new()
                                .write(true)
                                .open(&last_path)
                                .unwrap()
                                .set_len(len - 3)
                                .unwrap();
                        }
                        // A crash just after a new segment was created.
                        (false, true) => {
                            let header = SegmentHeader {
                                sequence: last_sequence + 1,
                                first_lsn: next_lsn,
                            }
                            .encode();
                            fs::write(dir.join(segment_file_name(last_sequence + 1)), header)
                                .unwrap();
                        }
                        // A crash while creating it.
                        (true, true) => {
                            let header = SegmentHeader {
                                sequence: last_sequence + 1,
                                first_lsn: next_lsn,
                            }
                            .encode();
                            fs::write(
                                dir.join(segment_file_name(last_sequence + 1)),
                                &header[..10],
                            )
                            .unwrap();
                        }
                    }
                    let settings = settings(&dir);
                    let idempotency = IdempotencyStore::new(10_000, 1_000_000);
                    let recovered = recover(
                        &settings,
                        &Tokenizer::new(settings.token_key),
                        &idempotency,
                        1_000,
                    )
                    .unwrap_or_else(|e| panic!("{name}: {e:#}"));
                    let expected = if torn && !boundary {
                        &before_last
                    } else {
                        &all
                    };
                    assert_eq!(&accounts(&recovered.shards), expected, "{name}: balances");
                    assert_eq!(
                        recovered.report.torn_tail.is_some(),
                        torn,
                        "{name}: torn tail reported"
                    );
                    assert_eq!(
                        recovered.snapshot.is_some(),
                        !matches!(snapshot, Snapshot::Absent),
                        "{name}: snapshot used"
                    );
                    let replayed_expected = match snapshot {
                        Snapshot::Absent => 120,
                        Snapshot::Valid | Snapshot::Corrupt => 60,
                    } - u64::from(torn && !boundary);
                    assert_eq!(
                        recovered.replayed, replayed_expected,
                        "{name}: entries replayed on top of the start state"
                    );
                    assert_eq!(
                        idempotency.len() as u64,
                        120 - u64::from(torn && !boundary),
                        "{name}: answers restored"
                    );
                    assert_eq!(
                        recovered.report.records,
                        120 - u64::from(torn && !boundary),
                        "{name}: records read"
                    );
                    checked += 1;
                    let _ = fs::remove_dir_all(&dir);
                }
            }
        }
        assert_eq!(checked, 12);
    }

    /// Replay does not read the segments wholly before the snapshot, except from the first
    /// entry about an issuer on: a request sent to an issuer and never answered, logged in
    /// the first segment, is still settled (its retransmission gets 91) after a restart from a
    /// snapshot many segments later.
    #[test]
    fn an_issuers_entry_before_the_snapshot_is_still_read() {
        let dir = crate::testing::TempDir::new("recovery-issuer");
        let key = TxnKey {
            acquirer: 123_456,
            terminal: *b"TERM0002",
            stan: 77,
            transmission: 1_126_000_000,
        };
        let sent = Entry::RemoteSent {
            at_seconds: 1_000,
            issuer: "sim".into(),
            key,
            fingerprint: 5,
            sent: (*b"0100", 12),
            reversal: format::Advice {
                id: 9,
                issuer: "sim".into(),
                created_seconds: 1_000,
                sealed: vec![1; 16],
            },
        };
        let mut payload = Vec::new();
        encode_entry(&sent, &mut payload);
        let (all, _) = build_after(&dir, Snapshot::Valid, 120, Some(payload));
        let segments = scan::segments(&dir).unwrap();
        assert!(
            scan::first_lsn_of(&segments[1].1).unwrap() <= 61,
            "segments wholly before the snapshot's marker"
        );
        let settings = settings(&dir);
        let idempotency = IdempotencyStore::new(10_000, 1_000_000);
        let recovered = recover(
            &settings,
            &Tokenizer::new(settings.token_key),
            &idempotency,
            1_000,
        )
        .unwrap();
        assert_eq!(accounts(&recovered.shards), all);
        assert_eq!(recovered.replayed, 60);
        assert_eq!(recovered.report.records, 121);
        assert_eq!(recovered.remote.settled.len(), 1, "the request is settled");
        match idempotency.begin(key, 5) {
            crate::acquirer::idempotency::Begin::Replay(outcome) => {
                assert_eq!(outcome.code, crate::domain::ResponseCode::IssuerUnavailable);
            }
            other => panic!("the retransmission gets 91, not {other:?}"),
        }
        drop(recovered);
        let _ = fs::remove_dir_all(&dir);
    }

    /// An approval written by an earlier release is not trusted by replay: a completion
    /// logged under its own hold's key (those rules allowed it), with the hold on disk, is
    /// looked for there, declined by these rules, and the start refused as written by an
    /// earlier release, rather than replayed as the capture the log says.
    #[test]
    fn an_earlier_releases_completion_under_its_holds_key_refuses_the_start() {
        let dir = crate::testing::TempDir::new("recovery-earlier-rules");
        let mut settings = settings(&dir);
        settings.shard_limits.hot_max = 1;
        let tokenizer = Tokenizer::new(settings.token_key);
        let card = tokenizer.token(&settings.demo.clone().unwrap().pan(0).unwrap());
        let key = |stan| TxnKey {
            acquirer: 123_456,
            terminal: *b"TERM0001",
            stan,
            transmission: 1_126_000_000,
        };
        let hold = |stan| Posting {
            kind: Kind::Authorization,
            card,
            amount: 10,
            currency: Some(840),
            key: key(stan),
            original: None,
            replacement: None,
        };
        let completion = Posting {
            kind: Kind::Completion,
            key: key(1),
            original: Some(key(1)),
            ..hold(1)
        };
        // The live run under the earlier rules: the completion did not look for its own key,
        // and captured the hold (on disk: a hot window of one).
        let mut live = genesis(&settings, &tokenizer)
            .unwrap()
            .swap_remove(shard_of(&card, 2))
            .with_cold(Box::<crate::ledger::shard::MemoryTier>::default());
        let mut payloads = Vec::new();
        for stan in [1, 2] {
            let outcome = live.apply(&hold(stan), 1_000);
            assert!(outcome.code.is_approved());
            let mut payload = Vec::new();
            let entry = Entry::Applied {
                posting: hold(stan),
                at_seconds: 1_000,
                fingerprint: u64::from(stan),
                outcome,
            };
            encode_entry(&entry, &mut payload);
            payloads.push(payload);
        }
        assert!(live.transaction_count() > live.hot_count());
        let captured = live.replay(&completion, 1_000, true);
        assert!(captured.code.is_approved(), "{captured:?}");
        let mut payload = Vec::new();
        format::encode_applied_v1(&completion, 1_000, &captured, &mut payload);
        payloads.push(payload);
        let (wal, thread) = test_writer(&settings);
        for payload in payloads {
            log(&wal, payload);
        }
        drop(wal);
        thread.join().unwrap();
        let error = recover(
            &settings,
            &tokenizer,
            &IdempotencyStore::new(10_000, 1_000_000),
            1_000,
        )
        .map(|_| ())
        .unwrap_err();
        let error = format!("{error:#}");
        assert!(
            error.contains("LSN 2") && error.contains("earlier release"),
            "{error}"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    /// An entry of a kind this build does not know, before the snapshot's marker (say, from a
    /// newer release): replay must not skip it unread, but refuse to start, naming it.
    #[test]
    fn an_unknown_entry_before_the_snapshot_refuses_the_start() {
        let dir = crate::testing::TempDir::new("recovery-unknown");
        build_after(&dir, Snapshot::Valid, 120, Some(vec![9, 1, 2, 3]));
        let settings = settings(&dir);
        let error = recover(
            &settings,
            &Tokenizer::new(settings.token_key),
            &IdempotencyStore::new(10_000, 1_000_000),
            1_000,
        )
        .map(|_| ())
        .unwrap_err();
        assert!(format!("{error:#}").contains("LSN 0"), "{error:#}");
        let _ = fs::remove_dir_all(&dir);
    }

    /// The only snapshot does not read back, and the store on disk holds something: the start
    /// is from genesis with the whole log, from the store opened beside the snapshot load and
    /// emptied.
    #[test]
    fn an_unusable_only_snapshot_starts_from_genesis_with_the_store_emptied() {
        let dir = crate::testing::TempDir::new("recovery-only-bad");
        let (all, _) = build(&dir, Snapshot::Valid, 120);
        let settings = settings(&dir);
        // Something on disk that genesis does not have.
        {
            let store = ColdStore::open(&dir.join(COLD_DIR), 1_000).unwrap();
            let mut tier = store
                .shard(0, &crate::ledger::ColdState::default())
                .unwrap();
            let key = TxnKey {
                acquirer: 1,
                terminal: *b"TERM0009",
                stan: 1,
                transmission: 1,
            };
            let card = genesis(&settings, &Tokenizer::new(settings.token_key)).unwrap()[0]
                .image()
                .accounts[0]
                .0;
            crate::ledger::ColdTier::insert_new(
                &mut tier,
                &key,
                &crate::ledger::Record::new(card, Kind::Purchase, 5),
            );
            crate::ledger::ColdTier::commit(&mut tier, 1);
            crate::ledger::ColdTier::flush(&tier);
        }
        let (_, path) = snapshot::list(&dir).unwrap()[0].clone();
        let mut bytes = fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xFF;
        fs::write(&path, bytes).unwrap();
        let idempotency = IdempotencyStore::new(10_000, 1_000_000);
        let recovered = recover(
            &settings,
            &Tokenizer::new(settings.token_key),
            &idempotency,
            1_000,
        )
        .unwrap();
        assert!(recovered.snapshot.is_none());
        assert_eq!(recovered.replayed, 120);
        assert_eq!(accounts(&recovered.shards), all);
        assert!(
            recovered.shards.iter().all(|s| s.cold_state().count == 0),
            "nothing on disk"
        );
        drop(recovered);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_log_pruned_behind_a_snapshot_needs_that_snapshot() {
        let dir = crate::testing::TempDir::new("recovery-pruned");
        build(&dir, Snapshot::Valid, 120);
        let (_, snapshot_path) = snapshot::list(&dir).unwrap()[0].clone();
        // What a crash while writing a snapshot leaves: retired by the next prune (the spare).
        let stray = dir.join("00000000000000000099.snap.tmp");
        fs::write(&stray, b"half a snapshot").unwrap();
        let pruned = snapshot::prune(
            &dir,
            &snapshot_path,
            60,
            Duration::ZERO,
            std::time::SystemTime::now() + Duration::from_secs(1),
        )
        .unwrap();
        assert!(
            pruned.segments > 0,
            "segments wholly before the snapshot are deleted"
        );
        assert!(!stray.exists(), "a snapshot left half written is retired");
        let settings = settings(&dir);
        let idempotency = IdempotencyStore::new(10_000, 1_000_000);
        let recovered = recover(
            &settings,
            &Tokenizer::new(settings.token_key),
            &idempotency,
            1_000,
        )
        .unwrap();
        assert_eq!(recovered.replayed, 60);
        drop(recovered);
        // Without the snapshot, the pruned log cannot be replayed from genesis: refuse.
        fs::remove_file(&snapshot_path).unwrap();
        let error = recover(
            &settings,
            &Tokenizer::new(settings.token_key),
            &idempotency,
            1_000,
        )
        .unwrap_err();
        assert!(
            format!("{error:#}").contains("no valid snapshot covers what came before it"),
            "{error:#}"
        );
    }
}
