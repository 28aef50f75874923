//! The write-ahead log (DESIGN §7 goals: group commit at least 500,000 durable records/s,
//! replay at least 1,000,000 records/s). Run: `cargo bench -p bench --bench wal`.
//!
//! - `group commit`: two submitter threads (as two shards) push Applied entries through the real
//!   writer with `fdatasync` per group; time until every record is released as durable.
//! - `append + fdatasync each`: the same records, one `write` and one `fdatasync` apiece: what a
//!   log without group commit gets on this disk, measured in the same run.
//! - `one group at a time`: 16 records submitted, then waited for until released, over and
//!   over (a closed loop: acquirers waiting on their answers), per group: with a segment that
//!   grows as it is written, and with one written ahead with zeros (`writer::ZeroFilled`, what
//!   the switch uses), whose syncs carry no file system metadata.
//! - `replay`: reading back a 200,000-record log (scan and decode), and scan, decode and apply
//!   to a ledger shard, as recovery does.

use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switch::domain::{CardToken, Kind, Outcome, Pan, Posting, ResponseCode, Tokenizer, TxnKey};
use switch::ledger::{Account, LedgerShard, ShardLimits};
use switch::wal::format::{self, Entry};
use switch::wal::scan::{self, Mode};
use switch::wal::writer::{self, Disk, Submission, SyncMode, WriterConfig, ZeroFilled};

const ACCOUNTS: u64 = 10_000;
const REPLAY_RECORDS: u64 = 200_000;

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switch-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench directory");
    dir
}

fn card(index: u64) -> CardToken {
    Tokenizer::new([9; 16]).token(&Pan::from_scheme("400000", index, 9).expect("demo PAN"))
}

/// The entry a purchase of 1.00 on `card` leaves in the log.
fn entry(n: u64, card: CardToken) -> Vec<u8> {
    let posting = Posting {
        kind: Kind::Purchase,
        card,
        amount: 100,
        currency: Some(840),
        key: TxnKey {
            acquirer: 123_456,
            terminal: *b"TERM0001",
            stan: (n % 1_000_000) as u32,
            transmission: 1_126_000_000 + n / 1_000_000,
        },
        original: None,
        replacement: None,
    };
    let outcome = Outcome {
        code: ResponseCode::Approved,
        auth_id: Some(*b"000001"),
        balances: None,
    };
    let mut payload = Vec::with_capacity(96);
    format::encode_entry(
        &Entry::Applied {
            posting,
            at_seconds: 1_795_000_000,
            fingerprint: n,
            outcome,
        },
        &mut payload,
    );
    payload
}

fn config(dir: &Path, sync: SyncMode) -> WriterConfig {
    WriterConfig {
        dir: dir.to_owned(),
        sync,
        group_records_max: 4096,
        group_bytes_max: 1 << 20,
        group_wait: Duration::ZERO,
        segment_bytes: 64 << 20,
        queue_records_max: 65_536,
    }
}

/// Pushes `records` entries from two threads through a fresh writer; returns the time until
/// the last one is released.
fn group_commit(records: u64) -> Duration {
    let dir = fresh_dir("group");
    let released = Arc::new(AtomicU64::new(0));
    let counter = released.clone();
    let (wal, thread) = writer::start(
        config(&dir, SyncMode::Group),
        Box::new(Disk),
        None,
        0,
        move |(), _, _| {
            counter.fetch_add(1, Ordering::Relaxed);
        },
        |error| panic!("{error}"),
    )
    .expect("writer");
    let payloads: Vec<Vec<u8>> = (0..1024).map(|n| entry(n, card(n % ACCOUNTS))).collect();
    let payloads = Arc::new(payloads);
    let start = Instant::now();
    let submitters: Vec<_> = (0..2)
        .map(|t| {
            let wal = wal.clone();
            let payloads = payloads.clone();
            std::thread::spawn(move || {
                for n in (t..records).step_by(2) {
                    while !wal.try_reserve() {
                        std::hint::spin_loop();
                    }
                    let payload = payloads[(n % 1024) as usize].clone();
                    wal.submit(Submission {
                        payload: Some(payload),
                        completion: (),
                    })
                    .expect("writer alive");
                }
            })
        })
        .collect();
    for submitter in submitters {
        submitter.join().expect("submitter");
    }
    while released.load(Ordering::Relaxed) < records {
        std::thread::sleep(Duration::from_micros(50));
    }
    let elapsed = start.elapsed();
    drop(wal);
    thread.join().expect("writer thread");
    let _ = std::fs::remove_dir_all(&dir);
    elapsed
}

/// `groups` times: 16 records submitted, then waited for until released; with the segment
/// written ahead (`ahead`) or growing.
fn one_group_at_a_time(groups: u64, ahead: bool) -> Duration {
    let dir = fresh_dir(if ahead { "ahead" } else { "grows" });
    let config = config(&dir, SyncMode::Group);
    let storage: Box<dyn writer::Storage> = if ahead {
        Box::new(ZeroFilled::new(&dir, config.segment_bytes).expect("zeroing thread"))
    } else {
        Box::new(Disk)
    };
    let released = Arc::new(AtomicU64::new(0));
    let counter = released.clone();
    let (wal, thread) = writer::start(
        config,
        storage,
        None,
        0,
        move |(), _, _| {
            counter.fetch_add(1, Ordering::Release);
        },
        |error| panic!("{error}"),
    )
    .expect("writer");
    let payload = entry(1, card(1));
    let start = Instant::now();
    for group in 1..=groups {
        for _ in 0..16 {
            while !wal.try_reserve() {
                std::hint::spin_loop();
            }
            wal.submit(Submission {
                payload: Some(payload.clone()),
                completion: (),
            })
            .expect("writer alive");
        }
        while released.load(Ordering::Acquire) < group * 16 {
            std::hint::spin_loop();
        }
    }
    let elapsed = start.elapsed();
    drop(wal);
    thread.join().expect("writer thread");
    let _ = std::fs::remove_dir_all(&dir);
    elapsed
}

fn append_and_sync_each(records: u64) -> Duration {
    let dir = fresh_dir("plain");
    let mut file = std::fs::File::create(dir.join("plain.log")).expect("file");
    let payload = entry(1, card(1));
    let mut buffer = Vec::with_capacity(256);
    let start = Instant::now();
    for lsn in 0..records {
        buffer.clear();
        format::append_record(&mut buffer, lsn, &payload);
        file.write_all(&buffer).expect("write");
        file.sync_data().expect("fdatasync");
    }
    let elapsed = start.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    elapsed
}

fn wal_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(1));
    group.bench_function("group commit (durable records)", |b| {
        b.iter_custom(group_commit)
    });
    group.bench_function("append + fdatasync each", |b| {
        b.iter_custom(append_and_sync_each)
    });
    group.bench_function("one group at a time: segment grows", |b| {
        b.iter_custom(|groups| one_group_at_a_time(groups, false))
    });
    group.bench_function("one group at a time: segment written ahead", |b| {
        b.iter_custom(|groups| one_group_at_a_time(groups, true))
    });
    group.finish();

    // A 200,000-record log to read back.
    let dir = fresh_dir("replay");
    let (wal, thread) = writer::start(
        config(&dir, SyncMode::None),
        Box::new(Disk),
        None,
        0,
        |(), _, _| {},
        |e| panic!("{e}"),
    )
    .expect("writer");
    for n in 0..REPLAY_RECORDS {
        while !wal.try_reserve() {
            std::thread::yield_now();
        }
        wal.submit(Submission {
            payload: Some(entry(n, card(n % ACCOUNTS))),
            completion: (),
        })
        .expect("writer alive");
    }
    drop(wal);
    thread.join().expect("writer thread");
    let genesis = {
        let limits = ShardLimits {
            transactions_max: 10_000_000,
            hot_max: 10_000_000,
            hold_expiry_seconds: 604_800,
            reversal_window_seconds: 86_400,
        };
        let mut shard = LedgerShard::new(0, limits);
        for n in 0..ACCOUNTS {
            shard.open_account(card(n), Account::new(1_000_000_000, 840));
        }
        shard
    };

    let mut group = c.benchmark_group("replay");
    group
        .sample_size(10)
        .throughput(Throughput::Elements(REPLAY_RECORDS));
    group.bench_function("scan + decode", |b| {
        b.iter(|| {
            let report = scan::scan(&dir, Mode::Verify, |_, payload| {
                black_box(format::decode_entry(payload).map_err(|e| e.to_string())?);
                Ok(())
            })
            .expect("scan");
            assert_eq!(report.records, REPLAY_RECORDS);
        })
    });
    group.bench_function("scan + decode + apply", |b| {
        b.iter_batched(
            || {
                let mut shard = LedgerShard::new(
                    0,
                    ShardLimits {
                        transactions_max: 10_000_000,
                        hot_max: 10_000_000,
                        hold_expiry_seconds: 604_800,
                        reversal_window_seconds: 86_400,
                    },
                );
                for n in 0..ACCOUNTS {
                    shard.open_account(card(n), Account::new(1_000_000_000, 840));
                }
                shard
            },
            |mut shard| {
                scan::scan(&dir, Mode::Verify, |_, payload| {
                    if let Entry::Applied {
                        posting,
                        at_seconds,
                        ..
                    } = format::decode_entry(payload).map_err(|e| e.to_string())?
                    {
                        black_box(shard.apply(&posting, at_seconds));
                    }
                    Ok(())
                })
                .expect("scan");
                shard
            },
            criterion::BatchSize::PerIteration,
        )
    });
    group.finish();
    drop(genesis);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, wal_benches);
criterion_main!(benches);
