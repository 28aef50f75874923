//! Writes a WAL of `--records` postings over the demo accounts of `--config`, exactly as the
//! switch would have, for measuring recovery at scale:
//!
//! ```sh
//! cargo run --release -p bench --bin wal-fixture -- --config bench/recovery-1m.toml --dir /tmp/wal-1m --records 10000000
//! target/release/switch run --config bench/recovery-1m.toml --wal-dir /tmp/wal-1m   # logs "ledger recovered … elapsed=…"
//! ```

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, ensure};
use clap::Parser;
use switch::config::Settings;
use switch::domain::{Kind, Posting, Tokenizer, TxnKey};
use switch::ledger::shard_of;
use switch::wal::format::{self, Entry};
use switch::wal::writer::{self, Disk, Submission, SyncMode, WriterConfig};

#[derive(Debug, Parser)]
struct Options {
    #[arg(long)]
    config: PathBuf,
    /// An empty (or missing) directory for the log.
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value_t = 10_000_000)]
    records: u64,
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let settings = Settings::load(&options.config)?;
    let demo = settings
        .demo
        .clone()
        .context("the config needs [demo] accounts")?;
    std::fs::create_dir_all(&options.dir)?;
    ensure!(
        std::fs::read_dir(&options.dir)?.next().is_none(),
        "{} is not empty",
        options.dir.display()
    );
    let started = Instant::now();
    let tokenizer = Tokenizer::new(settings.token_key);
    let mut shards = switch::recovery::genesis(&settings, &tokenizer)?;
    let cards: Vec<_> = (0..demo.count)
        .map(|i| demo.pan(i).map(|pan| tokenizer.token(&pan)))
        .collect::<Option<_>>()
        .context("demo PANs")?;
    eprintln!(
        "genesis of {} accounts in {:?}",
        cards.len(),
        started.elapsed()
    );
    let config = WriterConfig {
        dir: options.dir.clone(),
        sync: SyncMode::None,
        ..settings.wal.clone()
    };
    let (wal, thread) = writer::start(
        config,
        Box::new(Disk),
        None,
        0,
        |(), _, _| {},
        |error| eprintln!("{error}"),
    )?;
    let at_seconds = 1_795_000_000;
    for n in 0..options.records {
        // Every fourth request a hold, the others purchases of 0.01 to 0.09 over all accounts.
        let card = cards[usize::try_from(n.wrapping_mul(7_919) % demo.count)?];
        let posting = Posting {
            kind: if n % 4 == 0 {
                Kind::Authorization
            } else {
                Kind::Purchase
            },
            card,
            amount: 1 + n % 9,
            currency: Some(demo.currency),
            key: TxnKey {
                acquirer: 123_456,
                terminal: *format!("F{:07}", n / 1_000_000)
                    .as_bytes()
                    .first_chunk()
                    .context("terminal")?,
                stan: u32::try_from(n % 1_000_000)?,
                transmission: 1_126_000_000,
            },
            original: None,
            replacement: None,
        };
        let outcome = shards[shard_of(&card, settings.shards)].apply(&posting, at_seconds);
        let mut payload = Vec::with_capacity(96);
        format::encode_entry(
            &Entry::Applied {
                posting,
                at_seconds,
                fingerprint: n,
                outcome,
            },
            &mut payload,
        );
        while !wal.try_reserve() {
            std::thread::yield_now();
        }
        wal.submit(Submission {
            payload: Some(payload),
            completion: (),
        })
        .ok()
        .context("writer stopped")?;
    }
    drop(wal);
    let stats = thread.join().ok().context("writer thread panicked")?;
    eprintln!("{} records in {:?}", stats.next_lsn, started.elapsed());
    Ok(())
}
