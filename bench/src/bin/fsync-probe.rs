//! The disk's own `fdatasync` latency, for the open-loop figures of bench/RESULTS.md: writes
//! 4 KiB and syncs it, one after the other, for `--duration` seconds in `--dir` (put it on the
//! WAL's file system), and prints the percentiles. Run it while the load runs: the switch's
//! answers cannot be faster than the syncs they wait for.
//!
//! ```sh
//! target/release/fsync-probe --dir /tmp --duration 10
//! ```

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;

#[derive(Debug, Parser)]
struct Options {
    /// A directory on the file system to probe (a file is made and removed there).
    #[arg(long)]
    dir: PathBuf,
    /// Seconds to probe for.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Pause between syncs, in microseconds (0: back to back).
    #[arg(long, default_value_t = 1_000)]
    pause_micros: u64,
}

/// Syncs kept at most: the probe stops early rather than grow without bound.
const SAMPLES_MAX: usize = 10_000_000;

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let path = options
        .dir
        .join(format!("fsync-probe-{}", std::process::id()));
    let mut file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let block = [0x5au8; 4096];
    let mut samples: Vec<u32> = Vec::new();
    let end = Instant::now() + Duration::from_secs(options.duration);
    let mut offset = 0u64;
    let result = (|| -> anyhow::Result<()> {
        while Instant::now() < end && samples.len() < SAMPLES_MAX {
            file.seek(SeekFrom::Start(offset))?;
            let started = Instant::now();
            file.write_all(&block)?;
            file.sync_data()?;
            let took = started.elapsed();
            samples.push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
            // Within 64 MiB, like a WAL segment being appended to, then over again.
            offset = (offset + 4096) % (64 << 20);
            if options.pause_micros > 0 {
                std::thread::sleep(Duration::from_micros(options.pause_micros));
            }
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&path);
    result?;
    anyhow::ensure!(!samples.is_empty(), "no sync completed");
    samples.sort_unstable();
    let at = |permille: usize| samples[(samples.len() * permille / 1000).min(samples.len() - 1)];
    println!(
        "fdatasync of 4 KiB: {} syncs, p50 {} us, p99 {} us, p99.9 {} us, max {} us",
        samples.len(),
        at(500),
        at(990),
        at(999),
        samples[samples.len() - 1]
    );
    Ok(())
}
