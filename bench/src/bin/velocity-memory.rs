//! Resident memory and time of the risk engine's velocity state with many distinct cards: the
//! demo rule (more than 20 approvals per card within 60 s → 65) sized by
//! `--keys-max`, then `--cards` distinct cards approved once each, spread over one window.
//!
//! ```sh
//! cargo run --release -p bench --bin velocity-memory -- --cards 10000000 --keys-max 16777216
//! ```

use std::time::Instant;

use anyhow::{Context as _, ensure};
use clap::Parser;
use switch::config::Settings;
use switch::domain::request::{TxnKey, YearMonth};
use switch::domain::{Kind, Pan, Request, Tokenizer};
use switch::risk::RiskEngine;

#[derive(Debug, Parser)]
struct Options {
    /// Distinct cards to approve.
    #[arg(long, default_value_t = 10_000_000)]
    cards: u64,
    /// `risk.velocity_keys_max`: slots of the velocity table.
    #[arg(long, default_value_t = 16_777_216)]
    keys_max: usize,
}

/// Resident memory of this process, from /proc/self/statm.
fn resident_bytes() -> anyhow::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").context("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .context("statm has no resident field")?
        .parse()?;
    Ok(pages * 4096)
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let text = format!(
        "[risk]\nvelocity_keys_max = {}\n[[risk.rules]]\nname = \"card-velocity-60s\"\nper = \"card\"\nwindow_seconds = 60\ncount_max = 20\ncode = \"65\"\n",
        options.keys_max
    );
    let settings = Settings::parse(&text, "<velocity-memory>")?;
    let tokenizer = Tokenizer::new([7; 16]);
    let before = resident_bytes()?;
    let started = Instant::now();
    let engine = RiskEngine::new(settings.risk).map_err(anyhow::Error::msg)?;
    let allocated = started.elapsed();
    let empty = resident_bytes()?;
    let template = Request {
        kind: Kind::Authorization,
        pan: Pan::from_scheme("400000", 0, 9)?,
        card: tokenizer.token(&Pan::from_scheme("400000", 0, 9)?),
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
        expiry: None,
        transmission_month: YearMonth {
            year: 2026,
            month: 11,
        },
        merchant_category: Some(5999),
        country: None,
        entry_mode: None,
        merchant: None,
    };
    let start_ms = 1_796_040_000_000u64;
    let started = Instant::now();
    let mut declined = 0u64;
    let mut request = template;
    for index in 0..options.cards {
        let pan = Pan::from_scheme("400000", index, 9)?;
        request.card = tokenizer.token(&pan);
        request.pan = pan;
        // All within 50 s: every card is live in the 60 s window when the last one comes.
        let now_ms = start_ms + index * 50_000 / options.cards.max(1);
        match engine.evaluate(&request, now_ms) {
            Ok(passed) => passed.approved(),
            Err(_) => declined += 1,
        }
    }
    let elapsed = started.elapsed();
    let full = resident_bytes()?;
    let (slots, evictions) = engine
        .velocity_use()
        .flatten()
        .next()
        .context("the rule has a velocity table")?;
    ensure!(declined == 0, "{declined} distinct cards declined");
    let mib = |b: u64| b >> 20;
    println!(
        "velocity table: {slots} slots, allocated in {allocated:.2?}: resident {} MiB → {} MiB empty (+{} MiB)",
        mib(before),
        mib(empty),
        mib(empty.saturating_sub(before))
    );
    println!(
        "{} distinct cards approved in {elapsed:.2?} ({} ns each, tokenising included): resident {} MiB (+{} MiB over empty), {evictions} live keys evicted ({} per million)",
        options.cards,
        elapsed.as_nanos() / u128::from(options.cards.max(1)),
        mib(full),
        mib(full.saturating_sub(empty)),
        evictions * 1_000_000 / options.cards.max(1),
    );
    Ok(())
}
