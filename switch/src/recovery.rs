//! Start-up state: the genesis accounts from configuration, then every entry of the log
//! applied again on top, each checked against the outcome the log says was sent.
//!
//! The switch is not ready (no listener accepts) until this is done. A torn tail is truncated
//! and logged; corruption before the tail, or a replayed outcome that differs from the logged
//! one, refuses to start: the log and the state it would build disagree, and guessing would
//! risk money.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::actors::shard_of;
use crate::config::{AccountOverride, Settings};
use crate::domain::ledger::{Account, LedgerShard};
use crate::domain::{CardToken, Tokenizer};
use crate::idempotency::IdempotencyStore;
use crate::wal::format::{self, Entry};
use crate::wal::scan::{self, Mode, ScanReport};

/// How often replay logs its progress.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);

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
    pub idempotency_restored: u64,
    pub elapsed: Duration,
}

/// Genesis plus the log in `settings.wal.dir`, replayed; fills `idempotency` with the answers
/// still within their retention at `now_seconds`.
pub fn recover(
    settings: &Settings,
    tokenizer: &Tokenizer,
    idempotency: &IdempotencyStore,
    now_seconds: u64,
) -> anyhow::Result<Recovered> {
    let started = Instant::now();
    let mut shards = genesis(settings, tokenizer)?;
    let retention = settings.limits.idempotency_retention_seconds;
    let mut restored = 0u64;
    let mut last_progress = Instant::now();
    let report = scan::scan(&settings.wal.dir, Mode::Recover, |lsn, payload| {
        match format::decode_entry(payload).map_err(|e| e.to_string())? {
            Entry::Applied { posting, at_seconds, fingerprint, outcome } => {
                let shard = &mut shards[shard_of(&posting.card, settings.shards)];
                let replayed = shard.apply(&posting, at_seconds);
                if (replayed.code, replayed.balances) != (outcome.code, outcome.balances) {
                    return Err(format!(
                        "replay gave {} {:?} where the log says {} {:?}: the log was written on another genesis \
                         (demo data, ledger.token_key or ledger limits changed?)",
                        replayed.code.as_str(),
                        replayed.balances,
                        outcome.code.as_str(),
                        outcome.balances
                    ));
                }
                if now_seconds.saturating_sub(at_seconds) < retention
                    && idempotency.restore(posting.key, fingerprint, outcome, at_seconds)
                {
                    restored += 1;
                }
            }
            Entry::Expired { holds, .. } => {
                for (card, key) in holds {
                    if !shards[shard_of(&card, settings.shards)].release_expired(&key) {
                        return Err(format!("the log releases a hold of {card} that replay does not have open"));
                    }
                }
            }
        }
        if last_progress.elapsed() >= PROGRESS_INTERVAL {
            last_progress = Instant::now();
            tracing::info!(lsn, "recovery in progress");
        }
        Ok(())
    })
    .with_context(|| format!("cannot recover from the WAL in {}", settings.wal.dir.display()))?;
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
        idempotency_restored: restored,
        elapsed: started.elapsed(),
    })
}
