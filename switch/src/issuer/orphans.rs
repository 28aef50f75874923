//! What the log holds for issuers no longer configured: queued advices and requests sent with
//! no decision. They are kept (and their records kept from pruning) in case the issuer is
//! configured again, but not for ever: a day after it was made (the default
//! `advice_expiry_seconds`; a removed issuer has no setting of its own), each is given up,
//! logged as such at error level for reconciliation by hand, and its record let go of, so that
//! a removed issuer cannot stop the log from being pruned.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::unix_seconds;
use crate::domain::{Outcome, ResponseCode};
use crate::ledger::actor::{AfterLogged, Waiting, release};
use crate::recovery::Settled;
use crate::wal::format::{self, Advice, Entry};
use crate::wal::writer::{Durability, Submission, Wal};

use super::pins::Pins;

/// How long an orphan is kept.
pub const ORPHAN_EXPIRY_SECONDS: u64 = 86_400;
/// How often orphans are looked at.
const CHECK_INTERVAL: Duration = Duration::from_secs(600);

/// One thing the log holds for an unconfigured issuer, with the LSN of the record pinned for
/// it.
#[derive(Debug)]
pub enum Orphan {
    Advice { lsn: u64, advice: Advice },
    Settled(Settled),
}

impl Orphan {
    fn made_seconds(&self) -> u64 {
        match self {
            Orphan::Advice { advice, .. } => advice.created_seconds,
            Orphan::Settled(s) => s.at_seconds,
        }
    }
}

/// Gives up, now and every ten minutes, the orphans older than [`ORPHAN_EXPIRY_SECONDS`]; ends
/// when none is left.
pub fn start(
    wal: Wal<Waiting>,
    pins: Arc<Pins>,
    mut orphans: Vec<Orphan>,
) -> Option<tokio::task::JoinHandle<()>> {
    if orphans.is_empty() {
        return None;
    }
    Some(actix::spawn(async move {
        let mut tick = tokio::time::interval(CHECK_INTERVAL);
        while !orphans.is_empty() {
            tick.tick().await;
            let now = unix_seconds();
            let (old, young): (Vec<Orphan>, Vec<Orphan>) = orphans
                .into_iter()
                .partition(|o| now.saturating_sub(o.made_seconds()) >= ORPHAN_EXPIRY_SECONDS);
            orphans = young;
            for orphan in old {
                give_up(&wal, &pins, orphan, now);
            }
        }
    }))
}

fn give_up(wal: &Wal<Waiting>, pins: &Arc<Pins>, orphan: Orphan, now: u64) {
    if !wal.reserve_beyond_bound() {
        return;
    }
    let (entry, lsn) = match orphan {
        Orphan::Advice { lsn, advice } => {
            tracing::error!(
                issuer = advice.issuer,
                advice = %format_args!("{:032x}", advice.id),
                "an advice for an issuer no longer configured is a day old: given up; reconcile it by hand"
            );
            (
                Entry::AdviceDone {
                    at_seconds: now,
                    id: advice.id,
                    delivered: false,
                },
                lsn,
            )
        }
        Orphan::Settled(s) => {
            tracing::error!(
                issuer = s.issuer,
                stan = s.key.stan,
                "a request sent to an issuer no longer configured, never decided, is a day old: \
                 closed as 91 without its reversal; reconcile it by hand"
            );
            (
                Entry::Remote {
                    at_seconds: now,
                    issuer: s.issuer,
                    key: s.key,
                    fingerprint: s.fingerprint,
                    outcome: Outcome::decline(ResponseCode::IssuerUnavailable),
                    sent: Some((s.mti, s.stan)),
                    advices: Vec::new(),
                    original: None,
                },
                s.lsn,
            )
        }
    };
    let mut payload = Vec::with_capacity(128);
    format::encode_entry(&entry, &mut payload);
    let pins = pins.clone();
    let waiting = Waiting::Remote {
        reply: None,
        then: Some(AfterLogged(Box::new(move |durability, _| {
            if durability == Durability::Durable {
                pins.unpin(lsn);
            }
        }))),
    };
    if let Err(submission) = wal.submit(Submission {
        payload: Some(payload),
        completion: waiting,
    }) {
        release(submission.completion, Durability::Failed, 0, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TxnKey;
    use crate::wal::scan::{self, Mode};
    use crate::wal::writer::{self, Disk, SyncMode, WriterConfig};

    fn advice(id: u128, created_seconds: u64) -> Advice {
        Advice {
            id,
            issuer: "gone".into(),
            created_seconds,
            sealed: vec![1; 32],
        }
    }

    #[test]
    fn a_day_old_orphan_is_given_up_and_its_record_let_go_a_younger_one_kept() {
        let dir = crate::testing::TempDir::new("orphans");
        let config = WriterConfig {
            dir: dir.to_path_buf(),
            sync: SyncMode::Group,
            group_records_max: 64,
            group_bytes_max: 1 << 20,
            group_wait: Duration::ZERO,
            segment_bytes: 1 << 20,
            queue_records_max: 1_000,
        };
        let (wal, handle) = writer::start(
            config,
            Box::new(Disk),
            None,
            0,
            |waiting, durability, lsn| release(waiting, durability, lsn, None),
            |_| {},
        )
        .unwrap();
        let pins = Arc::new(Pins::default());
        let now = unix_seconds();
        // Records 3 and 9 queued them (pinned since recovery).
        pins.pin(3);
        pins.pin(5);
        pins.pin(9);
        let key = TxnKey {
            acquirer: 1,
            terminal: *b"T1      ",
            stan: 5,
            transmission: 7,
        };
        let settled = Settled {
            issuer: "gone".into(),
            key,
            at_seconds: now - ORPHAN_EXPIRY_SECONDS - 5,
            fingerprint: 11,
            mti: *b"0100",
            stan: 42,
            reversal: advice(2, now - ORPHAN_EXPIRY_SECONDS - 5),
            reversal_queued: false,
            lsn: 3,
        };
        let young = Orphan::Advice {
            lsn: 9,
            advice: advice(1, now - 60),
        };
        let old = Orphan::Settled(settled);
        assert!(now.saturating_sub(young.made_seconds()) < ORPHAN_EXPIRY_SECONDS);
        assert!(now.saturating_sub(old.made_seconds()) >= ORPHAN_EXPIRY_SECONDS);
        give_up(&wal, &pins, old, now);
        let old_advice = Orphan::Advice {
            lsn: 5,
            advice: advice(3, now - ORPHAN_EXPIRY_SECONDS),
        };
        give_up(&wal, &pins, old_advice, now);
        drop(wal);
        handle.join().unwrap();
        // The old one's record is let go of; the young one's is still kept.
        assert_eq!(pins.oldest(), Some(9));
        let mut closed = Vec::new();
        scan::scan(&dir, Mode::Verify, |_, payload| {
            closed.push(format::decode_entry(payload).unwrap());
            Ok(())
        })
        .unwrap();
        assert!(
            matches!(
                closed.as_slice(),
                [
                    Entry::Remote { key: k, outcome, sent: Some((_, 42)), advices, .. },
                    Entry::AdviceDone { id: 3, delivered: false, .. },
                ]
                    if *k == key && outcome.code == ResponseCode::IssuerUnavailable && advices.is_empty()
            ),
            "{closed:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
