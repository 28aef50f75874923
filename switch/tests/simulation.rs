//! Deterministic simulation of the ledger, the WAL and recovery, in the spirit of
//! TigerBeetle's VOPR: one seeded PRNG drives a workload of every message type (holds,
//! completions, partial and full reversals, reversals before their original, refunds,
//! deposits, withdrawals, balance inquiries, retransmissions, conflicting duplicates) and
//! bounded expiry steps, under a simulated clock that runs for days, with crashes at random
//! points: a group torn while being written (with a hole before surviving records of the same
//! group, or cut short), the rest of the batch never written, and snapshots taken now and then.
//!
//! The real shards, the real WAL writer (on real files) and the real recovery run; nothing
//! reads the wall clock. After every restart:
//! - conservation holds (the total is the genesis total);
//! - every acknowledged record is still in the log, and every answer acknowledged within the
//!   idempotency retention is given again, unchanged, to its retransmission;
//! - the recovered state equals the state the live run had after its last record that
//!   survived the crash (the whole shard images, not only balances).
//!
//! CI runs `SEEDS` seeds. `SWITCH_SIM_SEED=N cargo test -p switch --test simulation` replays
//! one seed (and prints each life); `SWITCH_SIM_SEEDS=K` runs K seeds.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use switch::acquirer::idempotency::{Begin, IdempotencyStore};
use switch::config::Settings;
use switch::domain::{CardToken, Kind, Minor, Outcome, Pan, Posting, Tokenizer, TxnKey};
use switch::ledger::{LedgerShard, ShardImage, shard_of};
use switch::recovery;
use switch::wal::format::{self, Entry, RecordRead, SnapshotSection};
use switch::wal::snapshot;
use switch::wal::writer::{self, Disk, Durability, Submission, Wal};

/// Seeds run by default (each a few hundred steps over several lives).
const SEEDS: u64 = 24;
const LIVES: usize = 6;
const ACCOUNTS: u64 = 16;
/// Shards in each life: the count changes between lives, as on a move to another machine.
const SHARDS: [usize; LIVES] = [2, 2, 3, 3, 1, 2];
/// 2026-11-26 00:00:00 UTC.
const START: u64 = 1_795_651_200;
const HOLD_EXPIRY: u64 = 2 * 86_400;
const REVERSAL_WINDOW: u64 = 6 * 3_600;
const RETENTION: u64 = 600;

/// SplitMix64: small, fast and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            items.get(usize::try_from(self.below(items.len() as u64)).unwrap())
        }
    }
}

fn settings(dir: &Path, shards: usize) -> Settings {
    let text = switch::config::EMBEDDED
        .replacen("accounts = 1000000 ", &format!("accounts = {ACCOUNTS} "), 1)
        .replacen("shards = 0 ", &format!("shards = {shards} "), 1)
        // One record per group, so that a seed reproduces its run byte for byte (how records
        // fall into groups would otherwise depend on thread timing). Torn groups of several
        // records are the scan's unit tests.
        .replacen("group_records_max = 4096", "group_records_max = 1", 1)
        .replacen(
            "hold_expiry_seconds = 604800",
            &format!("hold_expiry_seconds = {HOLD_EXPIRY}"),
            1,
        )
        .replacen(
            "reversal_window_seconds = 86400",
            &format!("reversal_window_seconds = {REVERSAL_WINDOW}"),
            1,
        )
        .replacen(
            "idempotency_retention_seconds = 300",
            &format!("idempotency_retention_seconds = {RETENTION}"),
            1,
        )
        // A hot window of three transactions: nearly everything lives on disk, is rolled back
        // to each snapshot's version at recovery and made again by replay.
        .replacen(
            "hot_transactions_per_shard_max = 4000000",
            "hot_transactions_per_shard_max = 3",
            1,
        )
        // Small segments, so that lives rotate them.
        .replacen("segment_bytes = 67108864", "segment_bytes = 16384", 1)
        .replacen(
            "dir = \"var/wal\"",
            &format!("dir = {:?}", dir.display().to_string()),
            1,
        );
    let settings = Settings::parse(&text, "<simulation>").unwrap();
    assert_eq!(settings.shards, shards);
    settings
}

/// Field 7 (MMDDhhmmss) of a Unix time.
fn field7(seconds: u64) -> u64 {
    let (_, month, day) = switch::acquirer::iso::civil_date(seconds / 86_400);
    let time = seconds % 86_400;
    u64::from(month) * 100_000_000
        + u64::from(day) * 1_000_000
        + time / 3_600 * 10_000
        + time / 60 % 60 * 100
        + time % 60
}

/// An acknowledged request: what a retransmission must get again.
#[derive(Clone, Copy)]
struct Answered {
    posting: Posting,
    fingerprint: u64,
    outcome: Outcome,
    at: u64,
}

/// The log as the simulation wrote it: one record per submission, in LSN order.
struct Log {
    wal: Wal<u64>,
    writer: std::thread::JoinHandle<writer::WriterStats>,
    released: crossbeam_channel::Receiver<(u64, Durability)>,
    next_lsn: u64,
}

impl Log {
    fn open(settings: &Settings, recovered: &recovery::Recovered) -> Log {
        let (sender, released) = crossbeam_channel::unbounded();
        let (wal, writer) = writer::start(
            settings.wal.clone(),
            Box::new(Disk),
            recovered.report.tail.clone(),
            recovered.report.next_lsn,
            move |lsn: u64, durability, _| {
                let _ = sender.send((lsn, durability));
            },
            |error| panic!("the simulated disk does not fail: {error}"),
        )
        .unwrap();
        Log {
            wal,
            writer,
            released,
            next_lsn: recovered.report.next_lsn,
        }
    }

    /// Submits one entry; returns its LSN.
    fn submit(&mut self, entry: &Entry) -> u64 {
        let mut payload = Vec::new();
        format::encode_entry(entry, &mut payload);
        assert!(self.wal.try_reserve());
        let lsn = self.next_lsn;
        self.wal
            .submit(Submission {
                payload: Some(payload),
                completion: lsn,
            })
            .unwrap();
        self.next_lsn += 1;
        lsn
    }

    /// Waits until `lsn` is durable.
    fn durable(&self, lsn: u64) {
        loop {
            let (released, durability) =
                self.released.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(durability, Durability::Durable);
            if released == lsn {
                return;
            }
        }
    }

    fn close(self) {
        drop(self.wal);
        self.writer.join().unwrap();
    }
}

/// The same accounts and settlement totals, however split into shards, and the same
/// transactions: where two shards kept the same key (a reversal remembered on one card, a
/// transaction of another card under that key), the merge keeps one of them.
fn same_union(recovered: &[ShardImage], live: &[ShardImage]) -> bool {
    let settlement = |images: &[ShardImage]| {
        let mut total: HashMap<u64, i64> = HashMap::new();
        for image in images {
            for (acquirer, position) in &image.settlement {
                *total.entry(*acquirer).or_default() += position;
            }
        }
        total
    };
    let accounts = |images: &[ShardImage]| {
        images
            .iter()
            .flat_map(|i| i.accounts.iter().copied())
            .collect::<HashMap<_, _>>()
    };
    let mut live_records: HashMap<TxnKey, Vec<switch::ledger::Record>> = HashMap::new();
    for (key, record) in live.iter().flat_map(|i| i.transactions.iter()) {
        live_records.entry(*key).or_default().push(*record);
    }
    let recovered_records: HashMap<TxnKey, switch::ledger::Record> = recovered
        .iter()
        .flat_map(|i| i.transactions.iter().copied())
        .collect();
    settlement(recovered) == settlement(live)
        && accounts(recovered) == accounts(live)
        && recovered_records.len() == live_records.len()
        && recovered_records.iter().all(|(key, record)| {
            live_records
                .get(key)
                .is_some_and(|all| all.contains(record))
        })
}

/// The whole state of each shard, in memory and on disk.
fn images(shards: &[LedgerShard]) -> Vec<ShardImage> {
    shards.iter().map(LedgerShard::full_image).collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    switch::wal::scan::segments(dir)
        .unwrap()
        .into_iter()
        .map(|(_, path)| path)
        .collect()
}

/// Tears the log as a crash while the batch after `acked` bytes of the last acknowledged
/// segment was being written: the group holding the first lost record is cut short or gets
/// a hole, and nothing after that group was ever written. Returns how it tore, for the report.
fn tear(rng: &mut Rng, dir: &Path, acked_segment: &Path, acked_len: u64) -> String {
    let segments = segments(dir);
    let last = segments.last().unwrap().clone();
    // Segments created after the acknowledged one held only unacknowledged records: a crash
    // may leave the first of them in any state, and the others never existed.
    let (path, floor) = match segments.iter().position(|p| p == acked_segment) {
        Some(at) if at + 1 < segments.len() => {
            for later in &segments[at + 2..] {
                std::fs::remove_file(later).unwrap();
            }
            (segments[at + 1].clone(), 0)
        }
        _ => (last, acked_len),
    };
    let mut bytes = std::fs::read(&path).unwrap();
    let floor = usize::try_from(floor).unwrap();
    // The groups after the floor: (start offset, end offset).
    let header = if floor == 0 {
        format::SEGMENT_HEADER_LEN
    } else {
        floor
    };
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let mut at = header.min(bytes.len());
    while at < bytes.len() {
        let RecordRead::Record {
            len, group_start, ..
        } = format::read_record(&bytes[at..])
        else {
            break;
        };
        if group_start || groups.is_empty() {
            groups.push((at, at + len));
        } else if let Some(last) = groups.last_mut() {
            last.1 = at + len;
        }
        at += len;
    }
    let Some(&(start, end)) = rng.pick(&groups) else {
        // Nothing unacknowledged reached this segment; maybe cut its header short.
        if floor == 0 && rng.chance(50) {
            bytes.truncate(usize::try_from(rng.below(header as u64)).unwrap());
            std::fs::write(&path, bytes).unwrap();
            return "a new segment cut while being created".to_owned();
        }
        return "nothing written after the last acknowledgement".to_owned();
    };
    // The chosen group was being written: later groups never were.
    bytes.truncate(end);
    let how = if rng.chance(50) && end - start > 16 {
        // A hole: some bytes of the group never reached the disk, later ones did.
        let from = start + usize::try_from(rng.below((end - start) as u64 / 2)).unwrap();
        let to = (from + 1 + usize::try_from(rng.below(64)).unwrap()).min(end);
        bytes[from..to].fill(0);
        format!("a hole at {from}..{to} in a group of {start}..{end}")
    } else {
        let cut = start + usize::try_from(rng.below((end - start) as u64)).unwrap();
        bytes.truncate(cut);
        format!("a group of {start}..{end} cut at {cut}")
    };
    std::fs::write(&path, bytes).unwrap();
    how
}

#[derive(Default)]
struct Report {
    steps: u64,
    records: u64,
    restarts: u64,
    torn: u64,
    snapshots: u64,
    retransmissions: u64,
    simulated_seconds: u64,
    /// The most transactions on disk at once.
    on_disk_max: u64,
    /// Requests that reused a key from long before.
    reused_keys: u64,
}

/// Writes a snapshot as the snapshotter does: the store on disk synced first, its undo log
/// settled after.
fn write_snapshot(
    dir: &Path,
    sections: &[SnapshotSection],
    cold: Option<&switch::ledger::cold::ColdStore>,
    now: u64,
) {
    let images: Vec<&ShardImage> = sections.iter().map(|s| &s.image).collect();
    if let Some(cold) = cold {
        cold.persist(&images).unwrap();
    }
    snapshot::write(dir, sections, now).unwrap();
    if let Some(cold) = cold {
        cold.settle(&images).unwrap();
    }
}

fn simulate(seed: u64, verbose: bool) -> Report {
    let mut rng = Rng(seed);
    let dir = std::env::temp_dir().join(format!("switch-sim-{}-{seed}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let tokenizer = Tokenizer::new(settings(&dir, SHARDS[0]).token_key);
    let cards: Vec<CardToken> = (0..ACCOUNTS)
        .map(|i| tokenizer.token(&Pan::from_scheme("400000", i, 9).unwrap()))
        .collect();
    let mut report = Report::default();
    let mut now = START;
    let mut stan = 0u32;
    let mut answered: Vec<Answered> = Vec::new();
    // Keys of transactions a completion or reversal may name, with their amount.
    let mut named: Vec<(TxnKey, Minor, usize, Kind)> = Vec::new();
    // After each record of the life, the live state, to compare with what recovery rebuilds.
    let mut expected: Option<Vec<ShardImage>> = None;
    let mut genesis_total: Option<i128> = None;
    for life in 0..LIVES {
        let settings = settings(&dir, SHARDS[life]);
        let count = SHARDS[life];
        let idempotency = IdempotencyStore::starting_at(1_000_000, RETENTION, now);
        let recovered = recovery::recover(&settings, &tokenizer, &idempotency, now)
            .unwrap_or_else(|e| panic!("seed {seed} life {life}: recovery refused: {e:#}"));
        let total: i128 = recovered.shards.iter().map(LedgerShard::total).sum();
        assert_eq!(
            *genesis_total.get_or_insert(total),
            total,
            "seed {seed} life {life}: conservation"
        );
        if let Some(expected) = &expected {
            let got = images(&recovered.shards);
            if got.len() == expected.len() {
                for (shard, (a, b)) in got.iter().zip(expected).enumerate() {
                    assert!(
                        a.same_state(b),
                        "seed {seed} life {life}: shard {shard} recovered other than the live state"
                    );
                }
            } else {
                // Split anew over another shard count: the same accounts and transactions.
                assert!(
                    same_union(&got, expected),
                    "seed {seed} life {life}: resharding changed the state"
                );
            }
        }
        for a in &answered {
            if now - a.at < RETENTION {
                match idempotency.begin(a.posting.key, a.fingerprint) {
                    Begin::Replay(outcome) => assert_eq!(
                        outcome, a.outcome,
                        "seed {seed} life {life}: an acknowledged answer changed"
                    ),
                    other => {
                        panic!("seed {seed} life {life}: an acknowledged answer is gone: {other:?}")
                    }
                }
            }
        }
        let mut log = Log::open(&settings, &recovered);
        let cold = recovered.cold.clone();
        assert!(cold.is_some(), "the simulation keeps transactions on disk");
        let mut shards = recovered.shards;
        report.restarts += u64::from(life > 0);
        let steps = 50 + rng.below(250);
        // The records of the last batch (not waited for), each with the live state after it.
        let mut unacknowledged: Vec<(u64, Vec<ShardImage>)> = Vec::new();
        let crash_batch_from = steps - rng.below(12).min(steps);
        for step in 0..steps {
            report.steps += 1;
            let waits = step < crash_batch_from;
            // Time: mostly seconds, now and then hours or days.
            now += match rng.below(100) {
                0..=1 => 86_400 + rng.below(86_400),
                2..=6 => 3_600 * (1 + rng.below(8)),
                _ => rng.below(5),
            };
            idempotency.sweep(now);
            let lsn = if rng.chance(15) {
                // One bounded expiry step of one shard, logged as the actor does.
                let shard = usize::try_from(rng.below(count as u64)).unwrap();
                let (holds_max, postings_max) = (1 + rng.below(4), 1 + rng.below(4));
                let (holds_max, postings_max) = (
                    u32::try_from(holds_max).unwrap(),
                    u32::try_from(postings_max).unwrap(),
                );
                let step = shards[shard].expiry_step(now, holds_max, postings_max);
                let done = shards[shard].expire_step(&step);
                if done.is_empty() {
                    continue;
                }
                log.submit(&Entry::Expire {
                    shard: u32::try_from(shard).unwrap(),
                    shards: u32::try_from(count).unwrap(),
                    step,
                    done,
                })
            } else if rng.chance(10) && waits {
                // A retransmission (or a conflicting duplicate) of a recent answer.
                let recent: Vec<Answered> = answered
                    .iter()
                    .filter(|a| now - a.at < RETENTION)
                    .copied()
                    .collect();
                let Some(a) = rng.pick(&recent).copied() else {
                    continue;
                };
                report.retransmissions += 1;
                let conflicting = rng.chance(20);
                let fingerprint = a.fingerprint ^ u64::from(conflicting);
                match idempotency.begin(a.posting.key, fingerprint) {
                    Begin::Replay(outcome) if !conflicting => {
                        assert_eq!(outcome, a.outcome, "seed {seed}: retransmission")
                    }
                    Begin::Conflict if conflicting => {}
                    other => panic!("seed {seed}: retransmission got {other:?}"),
                }
                continue;
            } else {
                let card_index = usize::try_from(rng.below(ACCOUNTS)).unwrap();
                let kind = *rng
                    .pick(&[
                        Kind::Authorization,
                        Kind::Authorization,
                        Kind::AuthorizationAdvice,
                        Kind::Purchase,
                        Kind::CashWithdrawal,
                        Kind::Refund,
                        Kind::Deposit,
                        Kind::BalanceInquiry,
                        Kind::Completion,
                        Kind::Completion,
                        Kind::Reversal,
                        Kind::ReversalAdvice,
                    ])
                    .unwrap();
                stan = (stan + 1) % 1_000_000;
                // Now and then sent by a clock up to an hour ahead.
                let ahead = if rng.chance(10) { rng.below(3_600) } else { 0 };
                let mut key = TxnKey {
                    acquirer: 123_456,
                    terminal: *b"TERM0001",
                    stan,
                    transmission: field7(now + ahead),
                };
                let mut reused = false;
                if rng.chance(5) && !kind.refers_to_original() {
                    // A key used long ago, past every retransmission window: the ledger answers
                    // 94 while its transaction is kept, and takes it anew once that is gone (a
                    // key on disk, taken by expiry and reused, must roll back and replay too).
                    let mut last_used: HashMap<TxnKey, u64> = HashMap::new();
                    for a in &answered {
                        let at = last_used.entry(a.posting.key).or_default();
                        *at = (*at).max(a.at);
                    }
                    let mut old: Vec<TxnKey> = last_used
                        .into_iter()
                        .filter(|(_, at)| now - at > 3 * RETENTION)
                        .map(|(key, _)| key)
                        .collect();
                    // In a fixed order, so that a seed replays the same run.
                    old.sort_by_key(|k| (k.stan, k.transmission));
                    if let Some(old) = rng.pick(&old) {
                        key = *old;
                        reused = true;
                    }
                }
                let mut amount = 1 + rng.below(30_000);
                let mut card = cards[card_index];
                let mut original = None;
                let mut replacement = None;
                let mut owner = card_index;
                if matches!(
                    kind,
                    Kind::Completion | Kind::Reversal | Kind::ReversalAdvice
                ) {
                    if kind != Kind::Completion && rng.chance(10) {
                        // A reversal before its original: names the next STAN, sent next.
                        original = Some(TxnKey {
                            stan: (stan + 1) % 1_000_000,
                            ..key
                        });
                    } else if let Some(&(named_key, named_amount, named_card, _)) = rng.pick(&named)
                    {
                        original = Some(named_key);
                        card = cards[named_card];
                        owner = named_card;
                        if kind != Kind::Completion {
                            amount = named_amount;
                            if rng.chance(30) {
                                replacement = Some(rng.below(named_amount + 1));
                            }
                        } else {
                            amount = 1 + rng.below(named_amount);
                        }
                    } else {
                        continue;
                    }
                }
                let posting = Posting {
                    kind,
                    card,
                    amount,
                    currency: Some(840),
                    key,
                    original,
                    replacement,
                };
                let fingerprint = rng.next();
                match idempotency.begin(key, fingerprint) {
                    Begin::New => {}
                    // Still remembered (a jump in time rotates the table once, not twice).
                    _ if reused => continue,
                    other => panic!("seed {seed}: a new key got {other:?}"),
                }
                let shard = shard_of(&card, count);
                let outcome = shards[shard].apply(&posting, now);
                report.reused_keys += u64::from(reused);
                idempotency.finish(&key, outcome);
                if outcome.code.is_approved() && !kind.is_reversal() && kind != Kind::BalanceInquiry
                {
                    named.push((key, amount, owner, kind));
                }
                let lsn = log.submit(&Entry::Applied {
                    posting,
                    at_seconds: now,
                    fingerprint,
                    outcome,
                });
                if waits {
                    answered.push(Answered {
                        posting,
                        fingerprint,
                        outcome,
                        at: now,
                    });
                }
                lsn
            };
            report.records += 1;
            let on_disk: u64 = shards.iter().map(|s| s.cold_state().count).sum();
            report.on_disk_max = report.on_disk_max.max(on_disk);
            if waits {
                log.durable(lsn);
                expected = Some(images(&shards));
                if rng.chance(3) {
                    // A snapshot of every shard between two records, as the snapshotter does.
                    let sections: Vec<SnapshotSection> = shards
                        .iter()
                        .map(|s| SnapshotSection {
                            marker_lsn: log.next_lsn,
                            image: s.image(),
                        })
                        .collect();
                    write_snapshot(&dir, &sections, cold.as_deref(), now);
                    report.snapshots += 1;
                }
            } else {
                unacknowledged.push((lsn, images(&shards)));
            }
        }
        // A change of shard count takes a snapshot to start from (recovery says so otherwise):
        // the operator's step before moving, taken while everything is acknowledged.
        if life + 1 < LIVES && SHARDS[life + 1] != count && unacknowledged.is_empty() {
            let sections: Vec<SnapshotSection> = shards
                .iter()
                .map(|s| SnapshotSection {
                    marker_lsn: log.next_lsn,
                    image: s.image(),
                })
                .collect();
            write_snapshot(&dir, &sections, cold.as_deref(), now);
            report.snapshots += 1;
        }
        // The crash: the batch that was not waited for may be torn anywhere.
        let acked_next = unacknowledged.first().map_or(log.next_lsn, |(lsn, _)| *lsn);
        let (acked_segment, acked_len) = {
            // The writer has synced everything once closed: find where the acknowledged part ends.
            log.close();
            let mut found = None;
            for path in segments(&dir) {
                let bytes = std::fs::read(&path).unwrap();
                let mut at = format::SEGMENT_HEADER_LEN;
                let first = format::SegmentHeader::decode(&bytes).unwrap().first_lsn;
                let mut lsn = first;
                if first > acked_next {
                    break;
                }
                while lsn < acked_next {
                    let RecordRead::Record { len, .. } = format::read_record(&bytes[at..]) else {
                        break;
                    };
                    at += len;
                    lsn += 1;
                }
                found = Some((path.clone(), at as u64));
            }
            found.unwrap()
        };
        if !unacknowledged.is_empty() && rng.chance(80) {
            let how = tear(&mut rng, &dir, &acked_segment, acked_len);
            report.torn += 1;
            if verbose {
                println!("seed {seed} life {life}: {steps} steps, crash: {how}");
            }
        }
        // What recovery must rebuild: the live state after the last record that survives.
        let survived = {
            let scan =
                switch::wal::scan::scan(&dir, switch::wal::scan::Mode::Verify, |_, _| Ok(()))
                    .unwrap_or_else(|e| {
                        panic!("seed {seed} life {life}: the torn log is corrupt: {e}")
                    });
            scan.next_lsn
        };
        assert!(
            survived >= acked_next,
            "seed {seed} life {life}: an acknowledged record was lost"
        );
        if let Some((_, state)) = unacknowledged.iter().rev().find(|(lsn, _)| *lsn < survived) {
            expected = Some(state.clone());
        }
        report.simulated_seconds = now - START;
    }
    let _ = std::fs::remove_dir_all(&dir);
    report
}

#[test]
fn seeded_runs_with_crashes_recover_the_live_state() {
    let seeds: Vec<u64> = match std::env::var("SWITCH_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("SWITCH_SIM_SEED is a number")],
        Err(_) => {
            let count = std::env::var("SWITCH_SIM_SEEDS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(SEEDS);
            (1..=count).collect()
        }
    };
    let verbose = seeds.len() == 1;
    let mut total = Report::default();
    for seed in seeds.iter().copied() {
        println!("seed {seed}");
        let report = simulate(seed, verbose);
        total.steps += report.steps;
        total.records += report.records;
        total.restarts += report.restarts;
        total.torn += report.torn;
        total.snapshots += report.snapshots;
        total.retransmissions += report.retransmissions;
        total.simulated_seconds += report.simulated_seconds;
        total.on_disk_max = total.on_disk_max.max(report.on_disk_max);
        total.reused_keys += report.reused_keys;
        assert!(report.restarts > 0);
    }
    assert!(
        total.on_disk_max > 0,
        "no transaction ever left the hot window: the store on disk went untested"
    );
    let tenths_of_days = total.simulated_seconds / 8_640;
    println!(
        "{} seeds: {} steps, {} records, {} restarts ({} torn), {} snapshots, {} retransmissions, {} reused keys, {}.{} simulated days, up to {} transactions on disk",
        seeds.len(),
        total.steps,
        total.records,
        total.restarts,
        total.torn,
        total.snapshots,
        total.retransmissions,
        total.reused_keys,
        tenths_of_days / 10,
        tenths_of_days % 10,
        total.on_disk_max
    );
}
