//! The hot-path stages one at a time, and all of them in one in-process chain without actors,
//! threads or sockets: what a request costs in CPU before any hop or syscall.
//! Run: `cargo bench -p bench --bench pipeline`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use adapters::{DialectName, Message, Mti};
use criterion::{Criterion, criterion_group, criterion_main};
use switch::acquirer::idempotency::{Begin, IdempotencyStore};
use switch::acquirer::iso;
use switch::config::Settings;
use switch::domain::{Kind, Outcome, Posting, Tokenizer, TxnKey};
use switch::ledger::{Account, LedgerShard, ShardLimits, shard_of};
use switch::risk::RiskEngine;
use switch::wal::format::{self, Entry};

const ACCOUNTS: u64 = 10_000;

fn settings() -> Settings {
    Settings::embedded().expect("the embedded configuration is valid")
}

fn authorization(index: u64, stan: u32) -> Vec<u8> {
    let mut m = Message::new(Mti(*b"0100"));
    let pan =
        switch::domain::Pan::from_scheme("400000", 1_000 + index % ACCOUNTS, 9).expect("demo PAN");
    let (digits, len) = pan.digits();
    m.set(2, digits[..len].to_vec());
    m.set(3, &b"000000"[..]);
    m.set(4, &b"000000000001"[..]);
    m.set(7, &b"1126143015"[..]);
    m.set(11, format!("{:06}", stan % 1_000_000).into_bytes());
    m.set(14, &b"3012"[..]);
    m.set(32, &b"123456"[..]);
    m.set(41, format!("B{:07}", stan / 1_000_000).into_bytes());
    m.set(42, &b"MERCHANT0000001"[..]);
    m.set(49, &b"840"[..]);
    let mut wire = Vec::new();
    DialectName::Default
        .dialect()
        .encode(&m, &mut wire)
        .expect("valid");
    wire
}

fn shard(settings: &Settings, tokenizer: &Tokenizer) -> LedgerShard {
    let limits = ShardLimits {
        transactions_max: 100_000_000,
        hot_max: 100_000_000,
        ..settings.shard_limits
    };
    let mut shard = LedgerShard::new(0, limits);
    for index in 0..ACCOUNTS {
        let pan = switch::domain::Pan::from_scheme("400000", 1_000 + index, 9).expect("demo PAN");
        shard.open_account(tokenizer.token(&pan), Account::new(1_000_000_000, 840));
    }
    shard
}

fn stages(c: &mut Criterion) {
    let settings = settings();
    let tokenizer = Tokenizer::new(settings.token_key);
    let dialect = DialectName::Default.dialect();
    let wire = authorization(7, 1);
    let message = dialect.decode(&wire).expect("valid");
    let request =
        iso::parse_request(&message, iso::today_utc(), &tokenizer).expect("valid request");

    c.bench_function(
        "parse 0100 into a request (incl. tokenising the PAN)",
        |b| b.iter(|| iso::parse_request(black_box(&message), iso::today_utc(), &tokenizer)),
    );
    // What one request adds on the real path: its count and its six stage latencies.
    c.bench_function(
        "metrics: count one transaction and observe its six stages",
        |b| {
            let metrics = switch::ops::metrics::metrics();
            let elapsed = Duration::from_micros(120);
            b.iter(|| {
                metrics.count(
                    black_box(b"0100"),
                    switch::domain::ResponseCode::Approved,
                    switch::ops::metrics::Route::OnUs,
                );
                for stage in switch::ops::metrics::Stage::ALL {
                    metrics.observe(stage, black_box(elapsed));
                }
            })
        },
    );
    let risk = RiskEngine::new(settings.risk.clone()).expect("memory");
    // A simulated clock a minute on per request, never going back across criterion's calls:
    // the card's velocity never fires.
    let mut now_ms = 1_796_040_000_000;
    c.bench_function("risk evaluation (the demo rules, one card)", |b| {
        b.iter(|| {
            now_ms += 60_000;
            risk.evaluate(black_box(&request), now_ms)
                .map(|passed| passed.approved())
        })
    });
    let mut routes = settings.routes.clone();
    for prefix in 0..1_000u32 {
        routes.insert(
            format!("5{prefix:05}").as_bytes(),
            switch::routing::Destination::OnUs,
        );
    }
    c.bench_function("routing lookup (1,002 prefixes)", |b| {
        b.iter(|| routes.route(black_box(&request.pan)))
    });

    c.bench_function("ledger apply: authorization", |b| {
        b.iter_custom(|iters| {
            let mut shard = shard(&settings, &tokenizer);
            shard.reserve_transactions(usize::try_from(iters).unwrap_or(0));
            let cards: Vec<_> = (0..ACCOUNTS)
                .map(|i| {
                    tokenizer.token(
                        &switch::domain::Pan::from_scheme("400000", 1_000 + i, 9).expect("PAN"),
                    )
                })
                .collect();
            let start = Instant::now();
            for n in 0..iters {
                let posting = Posting {
                    kind: Kind::Authorization,
                    card: cards[(n % ACCOUNTS) as usize],
                    amount: 1,
                    currency: Some(840),
                    key: TxnKey {
                        acquirer: 123_456,
                        terminal: *b"TERM0001",
                        stan: (n % 1_000_000) as u32,
                        transmission: n / 1_000_000,
                    },
                    original: None,
                    replacement: None,
                };
                black_box(shard.apply(&posting, 1_795_000_000));
            }
            start.elapsed()
        })
    });

    let entry = Entry::Applied {
        posting: request.posting(),
        at_seconds: 1_795_000_000,
        fingerprint: 1,
        outcome: Outcome {
            code: switch::domain::ResponseCode::Approved,
            auth_id: Some(*b"000001"),
            balances: None,
        },
    };
    let mut payload = Vec::with_capacity(128);
    let mut group = Vec::with_capacity(1 << 20);
    c.bench_function(
        "WAL append: encode an entry and frame it into the group buffer",
        |b| {
            b.iter(|| {
                payload.clear();
                format::encode_entry(black_box(&entry), &mut payload);
                if group.len() > (1 << 20) {
                    group.clear();
                }
                format::append_record(&mut group, 1, &payload);
            })
        },
    );
}

/// Everything a request goes through, in one thread: decode, identity and fingerprint,
/// idempotency, parse, risk, routing, ledger, WAL record, idempotency again, response.
fn chain(c: &mut Criterion) {
    let settings = settings();
    let tokenizer = Tokenizer::new(settings.token_key);
    let dialect = DialectName::Default.dialect();
    let risk = RiskEngine::new(settings.risk.clone()).expect("memory");
    let frames: Vec<Vec<u8>> = (0..4_096u32)
        .map(|n| authorization(u64::from(n) * 7, n))
        .collect();
    // The simulated clock of the risk rules, on across criterion's calls.
    let mut clock_ms: u64 = 1_796_040_000_000;
    // One idempotency table for the whole run, as the switch has one, but of 2,000,000 entries
    // (the default is 16,000,000) so that its generations turn over within the run: it is
    // swept once per 100,000 requests (a simulated second at 100,000/s) and rotates when a
    // generation is three quarters full, the sweep's pass over the older generation included
    // in the timed loop (the switch makes it on another task). Criterion's warm-up fills the
    // first generation; the second takes its pages during the first measured samples. A table made
    // anew for each sample took a page fault per insert into its pre-sized slots (6.3 us a
    // request with 64,000,000 slots), which the switch pays once, in its first minutes.
    let idempotency = IdempotencyStore::new(2_000_000, 300);
    // Identities unique across criterion's calls.
    let mut sent: u64 = 0;
    c.bench_function(
        "in-process pipeline: 0100 in, WAL record and 0110 out, metrics and journal",
        |b| {
            b.iter_custom(|iters| {
                let mut shard = shard(&settings, &tokenizer);
                shard.reserve_transactions(usize::try_from(iters).unwrap_or(0));
                let mut payload = Vec::with_capacity(128);
                let mut group = Vec::with_capacity(1 << 20);
                let mut out = Vec::with_capacity(512);
                let journal = switch::ops::journal::Journal::new(1, 100_000);
                let start = Instant::now();
                for n in sent..sent + iters {
                    if n % 100_000 == 0 {
                        idempotency.sweep(n / 100_000);
                    }
                    let received = Instant::now();
                    let mut frame = frames[(n % 4_096) as usize].clone();
                    // A unique STAN per request (and field 7's stand-in, `transmission`).
                    let stan = format!("{:06}", n % 1_000_000);
                    let at = frame
                        .windows(12)
                        .position(|w| w == b"000000000001")
                        .unwrap_or(0)
                        + 12
                        + 10;
                    frame[at..at + 6].copy_from_slice(stan.as_bytes());
                    let message = dialect.decode(&frame).expect("valid");
                    let identity = iso::identity(&message).expect("identity");
                    let identity = switch::domain::RequestIdentity {
                        transmission: n / 1_000_000,
                        ..identity
                    };
                    let fingerprint = iso::fingerprint(&message, &settings.token_key);
                    assert!(matches!(
                        idempotency.begin(identity, fingerprint),
                        Begin::New
                    ));
                    let request = iso::parse_request(&message, iso::today_utc(), &tokenizer)
                        .expect("request");
                    // Simulated time, 15 ms per request: each of the 4,096 cards comes back
                    // every 61 s, so the demo velocity rule (20 within 60 s) counts but never
                    // fires.
                    clock_ms += 15;
                    risk.evaluate(&request, clock_ms)
                        .expect("passes risk")
                        .approved();
                    let _ = settings.routes.route(&request.pan);
                    let _ = shard_of(&request.card, 1);
                    let posting = Posting {
                        key: identity,
                        ..request.posting()
                    };
                    let outcome = shard.apply(&posting, 1_795_000_000);
                    payload.clear();
                    format::encode_entry(
                        &Entry::Applied {
                            posting,
                            at_seconds: 1_795_000_000,
                            fingerprint,
                            outcome,
                        },
                        &mut payload,
                    );
                    if group.len() > (1 << 20) {
                        group.clear();
                    }
                    format::append_record(&mut group, n, &payload);
                    idempotency.finish(&identity, outcome);
                    let response = iso::response(&message, &outcome).expect("0110");
                    out.clear();
                    dialect.encode(&response, &mut out).expect("encodes");
                    black_box(&out);
                    // What the real path records for it: its count, six stage latencies (each
                    // from a clock read) and its entry in the operators' journal.
                    let metrics = switch::ops::metrics::metrics();
                    metrics.count(
                        &message.mti.0,
                        outcome.code,
                        switch::ops::metrics::Route::OnUs,
                    );
                    for stage in switch::ops::metrics::Stage::ALL {
                        metrics.observe(stage, received.elapsed());
                    }
                    journal.record(
                        0,
                        switch::ops::journal::Decision {
                            at_seconds: 1_795_000_000,
                            key: identity,
                            rrn: *b"000000000001",
                            card: Some(request.card),
                            mti: message.mti.0,
                            amount: request.amount,
                            code: outcome.code,
                            route: switch::ops::metrics::Route::OnUs,
                            rule: None,
                            via: None,
                        },
                    );
                }
                let elapsed = start.elapsed();
                sent += iters;
                elapsed
            })
        },
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = stages, chain
}
criterion_main!(benches);
