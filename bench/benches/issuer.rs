//! The issuer channel's book of remote approvals at its default size (4,194,304): what a
//! snapshot costs the channel's thread (taking the chunks, then the first insert after it,
//! which copies the last chunk), beside copying every entry as a flat list would.
//! Run: `cargo bench -p bench --bench issuer`.

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use switch::domain::TxnKey;
use switch::issuer::book::Book;

const ENTRIES: u32 = 4_194_304;

fn key(n: u32) -> TxnKey {
    TxnKey {
        acquirer: 123_456,
        terminal: *b"TERM0001",
        stan: n % 1_000_000,
        transmission: 1_130_000_000 + u64::from(n / 1_000_000),
    }
}

fn full_book() -> Book {
    let mut book = Book::new(ENTRIES as usize);
    for n in 0..ENTRIES {
        book.insert(key(n), *b"0100", n % 1_000_000);
    }
    book
}

fn snapshot(c: &mut Criterion) {
    let mut book = full_book();
    let mut group = c.benchmark_group("issuer book, 4,194,304 approvals");
    group.sample_size(20);
    group.bench_function(
        "snapshot: take the chunks, then one insert (copies a chunk)",
        |b| {
            let mut n = ENTRIES;
            b.iter_custom(|iterations| {
                let mut total = std::time::Duration::ZERO;
                for _ in 0..iterations {
                    let started = Instant::now();
                    let taken = book.take();
                    n += 1;
                    book.insert(key(n), *b"0100", n % 1_000_000);
                    total += started.elapsed();
                    black_box(taken);
                }
                total
            });
        },
    );
    group.bench_function("for comparison: copy every entry into one list", |b| {
        let taken = book.take();
        b.iter(|| {
            let flat: Vec<_> = taken.iter().flat_map(|c| c.iter().copied()).collect();
            black_box(flat)
        });
    });
    group.finish();
}

criterion_group!(benches, snapshot);
criterion_main!(benches);
