//! Transactions past the hot window, on disk (README "Transactions on disk"). Run:
//! `cargo bench -p bench --bench cold`.
//!
//! One shard with a hot window of 1,000 transactions and 1,000,000 purchases on disk (fjall in
//! a temporary directory, no concurrent load):
//! - `lookup on disk`: finding one transaction that left the hot window;
//! - `lookup of a key nowhere`: the duplicate check every new transaction makes;
//! - `reversal on disk`: a whole 0400 of a purchase on disk (lookup, money, write, commit);
//! - `purchase, spilling`: a new purchase while the window is full, so each one moves the
//!   oldest in memory to disk in pieces.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use switch::domain::{CardToken, Kind, Pan, Posting, Tokenizer, TxnKey};
use switch::ledger::cold::ColdStore;
use switch::ledger::{Account, ColdState, LedgerShard, ShardLimits};

const ACCOUNTS: u64 = 10_000;
const ON_DISK: u32 = 1_000_000;
/// 2026-11-26 14:30:15 UTC, and its field 7.
const NOW: u64 = 1_795_703_415;
const FIELD7: u64 = 1_126_143_015;

fn card(index: u64) -> CardToken {
    Tokenizer::new([9; 16]).token(&Pan::from_scheme("400000", index, 9).expect("demo PAN"))
}

fn key(stan: u32) -> TxnKey {
    TxnKey {
        acquirer: 123_456,
        terminal: *b"BENCH001",
        stan,
        transmission: FIELD7,
    }
}

fn purchase(stan: u32) -> Posting {
    Posting {
        kind: Kind::Purchase,
        card: card(u64::from(stan) % ACCOUNTS),
        amount: 100,
        currency: Some(840),
        key: key(stan),
        original: None,
        replacement: None,
    }
}

fn cold_benches(c: &mut Criterion) {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("switch-bench-cold-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = ColdStore::open(&dir, 100_000_000).expect("store");
    let limits = ShardLimits {
        transactions_max: 100_000_000,
        hot_max: 1_000,
        hold_expiry_seconds: 604_800,
        reversal_window_seconds: 86_400,
    };
    let mut shard = LedgerShard::new(0, limits).with_cold(Box::new(
        store.shard(0, &ColdState::default()).expect("tier"),
    ));
    for n in 0..ACCOUNTS {
        shard.open_account(card(n), Account::new(1_000_000_000, 840));
    }
    shard.reserve_transactions(2_000);
    for stan in 0..ON_DISK {
        shard.apply(&purchase(stan), NOW);
    }
    assert!(shard.cold_state().count >= u64::from(ON_DISK) - 2_000);
    let mut next = 7u32;
    let mut pick = || {
        // A spread over what is on disk, not the cache's favourite few.
        next = next.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        next % (ON_DISK - 10_000)
    };
    let mut group = c.benchmark_group("cold");
    group.bench_function("lookup on disk", |b| {
        b.iter(|| black_box(shard.transaction(&key(pick()))).expect("on disk"))
    });
    group.bench_function("lookup of a key nowhere", |b| {
        b.iter(|| {
            assert!(
                shard
                    .transaction(&key(ON_DISK + 5_000_000 + pick()))
                    .is_none()
            )
        })
    });
    let mut stan = ON_DISK + 10_000_000;
    group.bench_function("reversal on disk", |b| {
        b.iter(|| {
            let original = pick();
            stan += 1;
            let reversal = Posting {
                kind: Kind::Reversal,
                original: Some(key(original)),
                key: key(stan),
                ..purchase(original)
            };
            black_box(shard.apply(&reversal, NOW))
        })
    });
    group.bench_function("purchase, spilling", |b| {
        b.iter(|| {
            stan += 1;
            black_box(shard.apply(&purchase(stan), NOW))
        })
    });
    group.finish();
    drop(shard);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, cold_benches);
criterion_main!(benches);
