//! The risk engine: the demo rules, and 100 active rules of every kind (none declining, so
//! every one is evaluated: the worst case), with velocity over many distinct cards.
//! Run: `cargo bench -p bench --bench risk`.

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use switch::config::Settings;
use switch::domain::request::{TxnKey, YearMonth};
use switch::domain::{Kind, Pan, Request, Tokenizer};
use switch::risk::RiskEngine;

/// 2026-11-30 12:00:00 UTC.
const NOON_MS: u64 = 1_796_040_000_000;

/// 100 rules: 30 MCC blocks, 20 BIN ranges, 10 country rules, 10 keyed-amount rules, 10
/// merchant blocks, 8 terminal blocks, 6 night rules, 6 velocity rules (card, merchant and
/// terminal, counts and amounts), plus the `amount_max` shorthand.
pub fn hundred_rules() -> String {
    let mut text = String::from(
        "[risk]\nscore_decline = 100\nvelocity_keys_max = 2097152\nvelocity_merchants_max = 65536\nvelocity_terminals_max = 262144\n",
    );
    let mut rule = |body: String| {
        let _ = write!(text, "[[risk.rules]]\n{body}\n");
    };
    for i in 0..30 {
        rule(format!(
            "name = \"mcc-{i}\"\nmerchant_categories = [{}, {}]\ncode = \"57\"",
            7000 + i,
            8000 + i
        ));
    }
    for i in 0..20 {
        rule(format!(
            "name = \"bins-{i}\"\nbin_ranges = [[\"5{i:02}000\", \"5{i:02}999\"]]\ncode = \"62\""
        ));
    }
    for i in 0..10 {
        rule(format!(
            "name = \"country-{i}\"\ncountries = [{}]\nscore = 40",
            100 + i
        ));
    }
    for i in 0..10 {
        rule(format!(
            "name = \"keyed-{i}\"\nentry_modes = [\"01\"]\nmerchant_categories = [{}]\namount_above = \"{}.00\"\ncode = \"59\"",
            5000 + i,
            100 * (i + 1)
        ));
    }
    for i in 0..10 {
        rule(format!(
            "name = \"merchant-{i}\"\nmerchants = [\"BAD{i:04}\"]\ncode = \"05\""
        ));
    }
    for i in 0..8 {
        rule(format!(
            "name = \"terminal-{i}\"\nterminals = [\"BADT{i:04}\"]\ncode = \"05\""
        ));
    }
    for i in 0..6 {
        rule(format!(
            "name = \"night-{i}\"\nkinds = [\"withdrawal\"]\nmerchant_categories = [{}]\nhours = \"0{i}:00-0{}:00\"\ncode = \"57\"",
            6010 + i,
            i + 1
        ));
    }
    rule("name = \"card-count\"\nper = \"card\"\nwindow_seconds = 60\ncount_max = 500000\ncode = \"65\"".into());
    rule("name = \"card-amount\"\nper = \"card\"\nwindow_seconds = 86400\namount_max = \"100000000.00\"\ncode = \"61\"".into());
    rule("name = \"merchant-count\"\nper = \"merchant\"\nwindow_seconds = 3600\ncount_max = 500000\ncode = \"65\"".into());
    rule("name = \"merchant-amount\"\nper = \"merchant\"\nwindow_seconds = 3600\namount_max = \"100000000.00\"\ncode = \"61\"".into());
    rule("name = \"terminal-count\"\nper = \"terminal\"\nwindow_seconds = 600\ncount_max = 500000\ncode = \"65\"".into());
    rule("name = \"card-score\"\nper = \"card\"\nwindow_seconds = 3600\ncount_max = 500000\nscore = 10".into());
    text
}

fn request(tokenizer: &Tokenizer, index: u64) -> Request {
    let pan = Pan::from_scheme("400000", index, 9).expect("demo PAN");
    Request {
        kind: Kind::Authorization,
        card: tokenizer.token(&pan),
        pan,
        amount: 1_000,
        currency: Some(840),
        account_type: *b"00",
        key: TxnKey {
            acquirer: 123_456,
            terminal: *b"TERM0001",
            stan: 1,
            transmission: 1_130_120_000,
        },
        original: None,
        replacement: None,
        expiry: Some(YearMonth {
            year: 2030,
            month: 12,
        }),
        transmission_month: YearMonth {
            year: 2026,
            month: 11,
        },
        merchant_category: Some(5999),
        country: Some(840),
        entry_mode: Some(*b"051"),
        merchant: Some(*b"MERCHANT0000001"),
    }
}

fn risk(c: &mut Criterion) {
    let tokenizer = Tokenizer::new([7; 16]);
    let demo = RiskEngine::new(Settings::embedded().expect("valid").risk).expect("memory");
    let hundred = RiskEngine::new(
        Settings::parse(&hundred_rules(), "<bench>")
            .expect("valid")
            .risk,
    )
    .expect("memory");
    assert_eq!(hundred.rules().rules.len(), 101, "100 rules and amount_max");
    // Distinct cards, as traffic has them: 1,000,000 tokens, each seen about once a minute at
    // the simulated 16,667 requests/s (60 µs of simulated time apart), so the card rules keep
    // counting and none fires. The request is one (as on the real path, where it was just
    // parsed and is in cache); its card changes.
    let cards: Vec<_> = (0..1_000_000u64)
        .map(|i| tokenizer.token(&Pan::from_scheme("400000", i, 9).expect("demo PAN")))
        .collect();
    // 10,000 merchants and 50,000 terminals, as many acquirers' traffic has them.
    let merchants: Vec<[u8; 15]> = (0..10_000u32)
        .map(|i| {
            let mut id = [b' '; 15];
            id.copy_from_slice(format!("MERCHANT{i:07}").as_bytes());
            id
        })
        .collect();
    let terminals: Vec<[u8; 8]> = (0..50_000u32)
        .map(|i| {
            let mut id = [b' '; 8];
            id.copy_from_slice(format!("T{i:07}").as_bytes());
            id
        })
        .collect();
    let mut request = request(&tokenizer, 0);
    // One simulated clock for all of criterion's calls: it must never go back.
    let mut n: u64 = 0;
    for (name, engine, distinct) in [
        ("the demo rules", &demo, 1_000_000),
        ("100 rules, 6 of them velocity", &hundred, 1_000_000),
        ("100 rules, 6 of them velocity", &hundred, 1_000),
    ] {
        c.bench_function(&format!("risk: {name}, {distinct} distinct cards"), |b| {
            b.iter(|| {
                n += 1;
                request.card = cards[usize::try_from(n % distinct).unwrap_or(0)];
                request.merchant = Some(merchants[usize::try_from(n % 10_000).unwrap_or(0)]);
                request.key.terminal = terminals[usize::try_from(n % 50_000).unwrap_or(0)];
                let passed = engine
                    .evaluate(black_box(&request), NOON_MS + n * 60)
                    .expect("passes");
                passed.approved();
            })
        });
    }
    // The same 100 rules but the 6 velocity rules: what the static conditions cost.
    let mut text = hundred_rules();
    text.truncate(
        text.find("[[risk.rules]]\nname = \"card-count\"")
            .expect("velocity rules last"),
    );
    let fixed =
        RiskEngine::new(Settings::parse(&text, "<bench>").expect("valid").risk).expect("memory");
    assert_eq!(fixed.rules().rules.len(), 95);
    c.bench_function("risk: 94 rules without velocity", |b| {
        b.iter(|| {
            fixed
                .evaluate(black_box(&request), NOON_MS)
                .expect("passes")
                .approved();
        })
    });
    // A rule set of 100 with the usual two velocity rules (per card, count; per merchant,
    // amount) and 98 others: the 94 above and 4 more MCC blocks.
    for i in 0..4 {
        let _ = write!(
            text,
            "[[risk.rules]]\nname = \"more-mcc-{i}\"\nmerchant_categories = [{}]\ncode = \"57\"\n",
            6500 + i
        );
    }
    text.push_str("[[risk.rules]]\nname = \"card-count\"\nper = \"card\"\nwindow_seconds = 60\ncount_max = 500000\ncode = \"65\"\n");
    text.push_str("[[risk.rules]]\nname = \"merchant-amount\"\nper = \"merchant\"\nwindow_seconds = 3600\namount_max = \"100000000.00\"\ncode = \"61\"\n");
    let usual =
        RiskEngine::new(Settings::parse(&text, "<bench>").expect("valid").risk).expect("memory");
    assert_eq!(usual.rules().rules.len(), 101, "100 rules and amount_max");
    c.bench_function(
        "risk: 100 rules, 2 of them velocity, 1000000 distinct cards",
        |b| {
            b.iter(|| {
                n += 1;
                request.card = cards[usize::try_from(n % 1_000_000).unwrap_or(0)];
                request.merchant = Some(merchants[usize::try_from(n % 10_000).unwrap_or(0)]);
                request.key.terminal = terminals[usize::try_from(n % 50_000).unwrap_or(0)];
                usual
                    .evaluate(black_box(&request), NOON_MS + n * 60)
                    .expect("passes")
                    .approved();
            })
        },
    );
}

criterion_group!(benches, risk);
criterion_main!(benches);
