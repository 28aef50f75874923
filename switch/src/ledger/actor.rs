//! The ledger shard actor: the single owner of its accounts. It reserves a place in the log,
//! applies a transaction with the plain [`LedgerShard`], and hands the record with the waiting
//! answer to the WAL writer, which releases it once durable ([`release`]). It also runs the
//! shard's expiry steps and takes its part of snapshots.

use std::time::{Duration, Instant};

use actix::prelude::*;

use super::fetch::{Parked, spawn_reader};
use super::shard::{Account, LedgerShard, ShardView};
use crate::clock::unix_seconds;
use crate::domain::{CardToken, Outcome, Posting, ResponseCode, TxnKey};
use crate::limits::{EXPIRY_PIECE_MAX, EXPIRY_PIECE_MICROS, EXPIRY_PIECE_MIN};
use crate::ops::metrics::{Stage, metrics};
use crate::pipeline::{Answerer, Post, Replies, Reply, reply};
use crate::wal::format::{self, Entry};
use crate::wal::writer::{Durability, Release, Submission, Wal};

/// How often a shard releases expired holds.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(1);
/// Reads of the store out this long with none coming back mean the store is stuck.
const READ_STUCK_AFTER: Duration = Duration::from_secs(30);

/// What waits for a WAL record to be durable.
// `Nothing` is rare (one per expiry tick that released holds); boxing `Answer` to shrink it
// would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Waiting {
    /// The answer to send once the record is on disk.
    Answer(Reply),
    /// A record with no answer waiting (released holds).
    Nothing,
    /// The answer to an admin API change, once the record is on disk.
    Admin(AdminDone, Outcome),
    /// A remote issuer's decision (or an advice queued for it): the answer, if any, and what
    /// the issuer channel does once the record is durable (queue the advice, let go of a
    /// log record), called with the durability and the record's LSN.
    Remote {
        reply: Option<Reply>,
        then: Option<AfterLogged>,
    },
    /// A shard's view for snapshot `generation`, taken between its records before the marker
    /// LSN and those after.
    Snapshot {
        generation: u64,
        shard: usize,
        view: Box<ShardView>,
    },
    /// An issuer channel's approvals for snapshot `generation`, split the same way.
    RemoteSnapshot {
        generation: u64,
        issuer: String,
        originals: crate::issuer::book::Taken,
    },
}

/// A part of a snapshot with its marker LSN, on its way to the snapshotter.
#[derive(Debug)]
pub struct Taken {
    pub generation: u64,
    pub marker_lsn: u64,
    pub part: TakenPart,
}

#[derive(Debug)]
pub enum TakenPart {
    Shard {
        shard: usize,
        view: Box<ShardView>,
    },
    Remote {
        issuer: String,
        originals: crate::issuer::book::Taken,
    },
}

/// Called by the WAL writer thread, in log order, once a group is durable or has failed. A
/// failed record's answer becomes 96: the decision is not known to be on disk, and a
/// retransmission after the restart is decided anew. Answers go out at once, one by one; the
/// writer's [`Releaser`] gathers them per worker instead.
pub fn release(
    waiting: Waiting,
    durability: Durability,
    lsn: u64,
    snapshots: Option<&crossbeam_channel::Sender<Taken>>,
) {
    release_to(waiting, durability, lsn, snapshots, None);
}

/// Per worker, its answer queue and the answers a group released for it.
type Gathered = Vec<Option<(std::sync::Arc<Addr<Answerer>>, Vec<Reply>)>>;

/// What the WAL writer does once a group is durable: the answers it releases are handed to
/// each worker in one message at the end of the group (one wake-up of the worker per group,
/// not one per answer); snapshot parts go to the snapshotter.
#[derive(Debug)]
pub struct Releaser {
    snapshots: Option<crossbeam_channel::Sender<Taken>>,
    gathered: Gathered,
}

impl Releaser {
    pub fn new(snapshots: Option<crossbeam_channel::Sender<Taken>>) -> Releaser {
        Releaser {
            snapshots,
            gathered: Vec::new(),
        }
    }
}

impl Release<Waiting> for Releaser {
    fn release(&mut self, waiting: Waiting, durability: Durability, lsn: u64) {
        release_to(
            waiting,
            durability,
            lsn,
            self.snapshots.as_ref(),
            Some(&mut self.gathered),
        );
    }

    fn end_of_group(&mut self) {
        for (answerer, replies) in self.gathered.iter_mut().flatten() {
            if !replies.is_empty() {
                let capacity = replies.len();
                answerer.do_send(Replies(std::mem::replace(
                    replies,
                    Vec::with_capacity(capacity),
                )));
            }
        }
    }
}

fn release_to(
    waiting: Waiting,
    durability: Durability,
    lsn: u64,
    snapshots: Option<&crossbeam_channel::Sender<Taken>>,
    gathered: Option<&mut Gathered>,
) {
    match waiting {
        Waiting::Answer(mut reply) => {
            if let Some(logged) = reply.transaction.logged {
                metrics().observe(Stage::Wal, logged.elapsed());
            }
            if durability == Durability::Failed {
                reply.outcome = Outcome::decline(ResponseCode::SystemMalfunction);
                reply.shed = true;
            }
            match gathered {
                Some(gathered) => {
                    let worker = reply.transaction.reply_to.worker;
                    if gathered.len() <= worker {
                        gathered.resize_with(worker + 1, || None);
                    }
                    let (_, replies) = gathered[worker].get_or_insert_with(|| {
                        (reply.transaction.reply_to.answerer.clone(), Vec::new())
                    });
                    replies.push(reply);
                }
                None => {
                    let session = reply.transaction.reply_to.session.clone();
                    session.answer(reply);
                }
            }
        }
        Waiting::Snapshot {
            generation,
            shard,
            view,
        } if durability == Durability::Durable => {
            if let Some(snapshots) = snapshots {
                let _ = snapshots.send(Taken {
                    generation,
                    marker_lsn: lsn,
                    part: TakenPart::Shard { shard, view },
                });
            }
        }
        Waiting::RemoteSnapshot {
            generation,
            issuer,
            originals,
        } if durability == Durability::Durable => {
            if let Some(snapshots) = snapshots {
                let _ = snapshots.send(Taken {
                    generation,
                    marker_lsn: lsn,
                    part: TakenPart::Remote { issuer, originals },
                });
            }
        }
        Waiting::Admin(done, outcome) => {
            let outcome = if durability == Durability::Durable {
                outcome
            } else {
                Outcome::decline(ResponseCode::SystemMalfunction)
            };
            // Called whether or not the HTTP caller is still there: what records the answer
            // for its Idempotency-Key must not depend on the connection.
            done.call(outcome);
        }
        Waiting::Remote { reply, then } => {
            if let Some(reply) = reply {
                release_to(Waiting::Answer(reply), durability, lsn, snapshots, gathered);
            }
            if let Some(then) = then {
                (then.0)(durability, lsn);
            }
        }
        Waiting::Snapshot { .. } | Waiting::RemoteSnapshot { .. } | Waiting::Nothing => {}
    }
}

/// What an issuer channel does once its record is durable (or has failed), on the WAL
/// writer's thread: light work only (a pin, a message to the channel).
pub struct AfterLogged(pub Box<dyn FnOnce(Durability, u64) + Send>);

impl std::fmt::Debug for AfterLogged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AfterLogged")
    }
}

#[derive(Debug)]
pub struct LedgerActor {
    shard: LedgerShard,
    /// How many shards there are: expiry records name it, since replay must split the
    /// accounts the same way to repeat a shard's expiry.
    shards: u32,
    wal: Wal<Waiting>,
    mailbox_capacity: usize,
    /// Per shard, the requests workers routed to it and it has not taken up yet: this
    /// shard's count goes down as it takes a batch ([`crate::routing::dispatch`]).
    queued: std::sync::Arc<[std::sync::atomic::AtomicUsize]>,
    /// Holds (and postings) the next expiry step takes at most, sized to its time budget.
    expiry_piece: u32,
    /// Holds released by the pieces of the current run (logged once, when it ends).
    expiry_released: u64,
    /// Pieces of the current run.
    expiry_pieces: u64,
    /// A next piece is scheduled: the once-a-second tick leaves expiry to it, so that one
    /// chain of pieces runs at a time.
    expiry_chained: bool,
    /// Requests waiting for reads of the store made off this thread ([`super::fetch`]).
    parked: Parked<crate::pipeline::Transaction>,
    /// The queue of the thread that reads the store ahead (`None`: no store, or no thread).
    reads: Option<crossbeam_channel::Sender<TxnKey>>,
    reads_ahead: prometheus::IntCounter,
}

impl LedgerActor {
    pub fn new(
        shard: LedgerShard,
        shards: u32,
        wal: Wal<Waiting>,
        mailbox_capacity: usize,
        queued: std::sync::Arc<[std::sync::atomic::AtomicUsize]>,
    ) -> LedgerActor {
        let shard_index = shard.index();
        LedgerActor {
            shard,
            shards,
            wal,
            mailbox_capacity,
            queued,
            expiry_piece: EXPIRY_PIECE_MAX,
            expiry_released: 0,
            expiry_pieces: 0,
            expiry_chained: false,
            parked: Parked::default(),
            reads: None,
            reads_ahead: metrics().ledger_reads_ahead(shard_index),
        }
    }

    /// One bounded piece of expiry, logged; schedules the next piece if more is due, so that a
    /// million holds falling due together are released in pieces between requests. A piece is
    /// sized to take about `EXPIRY_PIECE_MICROS` (holds on disk are read one by one), and the
    /// next waits as long as this one took, and the once-a-second tick starts no other chain
    /// meanwhile: expiry takes at most about half of the shard's time while a mass of holds
    /// expires. (The pieces' sizes are logged with them, so replay repeats them whatever the
    /// timing.)
    fn expire(&mut self, ctx: &mut Context<Self>) {
        self.export_counts();
        // Reserve first: a release that cannot be logged must not happen yet.
        if !self.wal.try_reserve() {
            return;
        }
        let piece = self.expiry_piece;
        let step = self.shard.expiry_step(unix_seconds(), piece, piece);
        let started = Instant::now();
        let done = self.shard.expire_step(&step);
        let took = started.elapsed();
        let budget = Duration::from_micros(EXPIRY_PIECE_MICROS);
        // Only a full piece says what a full piece costs: a trickle of due holds leaves the
        // size as it was.
        if done.more && took > budget {
            self.expiry_piece = (piece / 2).max(EXPIRY_PIECE_MIN);
        } else if done.more && took < budget / 4 {
            self.expiry_piece = piece.saturating_mul(2).min(EXPIRY_PIECE_MAX);
        }
        if self.cold_failed() {
            return;
        }
        if done.is_empty() {
            self.wal.unreserve();
            self.end_expiry_run();
            return;
        }
        metrics().expired_holds.inc_by(u64::from(done.released));
        self.expiry_released += u64::from(done.released);
        self.expiry_pieces += 1;
        if !done.more {
            self.end_expiry_run();
        }
        let entry = Entry::Expire {
            shard: self.shard.index(),
            shards: self.shards,
            step,
            done,
        };
        let mut payload = Vec::with_capacity(64);
        format::encode_entry(&entry, &mut payload);
        let _ = self.wal.submit(Submission {
            payload: Some(payload),
            completion: Waiting::Nothing,
        });
        if done.more {
            self.expiry_chained = true;
            ctx.run_later(took.min(EXPIRY_INTERVAL), |actor, ctx| {
                actor.expiry_chained = false;
                actor.expire(ctx);
            });
        }
    }

    /// One log line for a run of pieces, however small the pieces.
    fn end_expiry_run(&mut self) {
        if self.expiry_released > 0 {
            tracing::info!(
                shard = self.shard.index(),
                released = self.expiry_released,
                pieces = self.expiry_pieces,
                "released expired holds"
            );
        }
        self.expiry_released = 0;
        self.expiry_pieces = 0;
    }
}

impl LedgerActor {
    /// The shard's gauges: transactions in memory and on disk, and how far expiry is behind.
    fn export_counts(&self) {
        let index = self.shard.index();
        metrics()
            .ledger_transactions(index)
            .set(i64::try_from(self.shard.hot_count()).unwrap_or(i64::MAX));
        metrics()
            .ledger_transactions_on_disk(index)
            .set(i64::try_from(self.shard.cold_state().count).unwrap_or(i64::MAX));
        metrics()
            .ledger_expiry_lag(index)
            .set(i64::try_from(self.shard.expiry_lag(unix_seconds())).unwrap_or(i64::MAX));
    }

    /// After a change: if the store on disk failed during it, the shard's state can no longer
    /// be trusted. The change is not logged (its reservation is given back), and the log is
    /// stopped: every waiting request gets 96, `/readyz` turns 503, the process exits 1, and
    /// recovery rebuilds the state from the snapshot and the log.
    fn cold_failed(&mut self) -> bool {
        let Some(failure) = self.shard.cold_failure() else {
            return false;
        };
        self.wal.unreserve();
        if !self.wal.has_failed() {
            tracing::error!(shard = self.shard.index(), "{failure}");
        }
        self.wal.poison(failure);
        let _ = self.wal.submit_marker(Waiting::Nothing);
        true
    }
}

impl LedgerActor {
    /// Reads of the store out for [`READ_STUCK_AFTER`] with none coming back leave their
    /// requests (and those behind them) unanswered: the store is stuck, like one that takes no
    /// writes. The log is stopped as for a failed store: every waiting request gets 96 now,
    /// `/readyz` turns 503, the process exits 1. (A slow disk whose reads keep arriving is
    /// not stuck, however long the queue.)
    fn check_reads(&mut self) {
        let Some(stalled) = self.parked.reads_stalled_for() else {
            return;
        };
        if stalled < READ_STUCK_AFTER || self.wal.has_failed() {
            return;
        }
        let failure = format!(
            "the transactions on disk (shard {}) failed: no read has come back for {stalled:?}",
            self.shard.index()
        );
        tracing::error!(shard = self.shard.index(), "{failure}");
        self.wal.poison(failure);
        let _ = self.wal.submit_marker(Waiting::Nothing);
        // Nothing is applied any more: each is answered 96 at once.
        while let Some((transaction, keys)) = self.parked.pop_front() {
            self.apply_now(transaction);
            self.parked.applied(&mut self.shard, &keys);
        }
    }
}

impl Actor for LedgerActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
        if let Some(reader) = self.shard.cold_reader() {
            // A weak address: the thread ends once the shard has stopped.
            let shard = ctx.address().downgrade();
            self.reads = spawn_reader(self.shard.index(), reader, move |key, value| {
                let Some(shard) = shard.upgrade() else {
                    return false;
                };
                shard.do_send(Fetched { key, value });
                true
            });
        }
        ctx.run_interval(EXPIRY_INTERVAL, |actor, ctx| {
            actor.check_reads();
            if actor.expiry_chained {
                actor.export_counts();
            } else {
                actor.expire(ctx);
            }
        });
        // Exported from the start; brought up to date at every expiry tick.
        self.export_counts();
    }
}

/// Asks a shard for its part of snapshot `generation`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct TakeSnapshot {
    pub generation: u64,
}

impl Handler<TakeSnapshot> for LedgerActor {
    type Result = ();
    fn handle(&mut self, message: TakeSnapshot, _: &mut Self::Context) {
        // A store that failed may not hold what the image says it does.
        if self.shard.cold_failure().is_some() {
            return;
        }
        // A view shares the state's tables (no entry is copied); the snapshotter copies it,
        // and meanwhile this shard's writes to a table the view holds go to an overlay
        // (`super::parted`). Copying all of it here stopped the shard for 0.3–1.0 s at a hot
        // window of 4 M transactions.
        let started = Instant::now();
        let shard = usize::try_from(self.shard.index()).unwrap_or(usize::MAX);
        let view = Box::new(self.shard.view());
        tracing::info!(
            shard,
            generation = message.generation,
            accounts = view.account_count(),
            transactions = view.transaction_count(),
            elapsed = ?started.elapsed(),
            "shard state taken for a snapshot"
        );
        let _ = self.wal.submit_marker(Waiting::Snapshot {
            generation: message.generation,
            shard,
            view,
        });
    }
}

impl Handler<Post> for LedgerActor {
    type Result = ();
    fn handle(&mut self, Post(transactions): Post, _: &mut Self::Context) {
        let index = usize::try_from(self.shard.index()).unwrap_or(usize::MAX);
        if let Some(queued) = self.queued.get(index) {
            queued.fetch_sub(transactions.len(), std::sync::atomic::Ordering::AcqRel);
        }
        for transaction in transactions {
            self.post(transaction);
        }
    }
}

/// What the shard's reading thread found for a key (see [`super::fetch`]).
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Fetched {
    key: TxnKey,
    value: Result<Option<Vec<u8>>, String>,
}

impl Handler<Fetched> for LedgerActor {
    type Result = ();
    fn handle(&mut self, Fetched { key, value }: Fetched, _: &mut Self::Context) {
        self.reads_ahead.inc();
        self.parked.arrived(&mut self.shard, key, value);
        self.resume();
    }
}

impl LedgerActor {
    /// Applies `transaction` now, or parks it while what it looks up is read from the store
    /// off this thread ([`super::fetch`]).
    fn post(&mut self, transaction: crate::pipeline::Transaction) {
        if self.wal.has_failed() {
            // Answered 96 at once: nothing is applied any more.
            return self.apply_now(transaction);
        }
        while self.parked.is_full() {
            // Too many wait: the first is applied now, reading on this thread.
            let Some((first, keys)) = self.parked.pop_front() else {
                break;
            };
            self.apply_now(first);
            self.parked.applied(&mut self.shard, &keys);
        }
        let posting = transaction.request.posting();
        let now = {
            let reads = &self.reads;
            let mut read = |key| reads.as_ref().is_some_and(|r| r.try_send(key).is_ok());
            self.parked
                .admit(&mut self.shard, posting, transaction, &mut read)
        };
        if let Some(transaction) = now {
            self.apply_now(transaction);
        }
        if !self.parked.is_empty() {
            self.resume();
        }
    }

    /// Applies the parked requests whose reads have arrived, in their order.
    fn resume(&mut self) {
        loop {
            let next = {
                let reads = &self.reads;
                let mut read = |key| reads.as_ref().is_some_and(|r| r.try_send(key).is_ok());
                self.parked.next_ready(&mut self.shard, &mut read)
            };
            let Some((transaction, keys)) = next else {
                break;
            };
            self.apply_now(transaction);
            self.parked.applied(&mut self.shard, &keys);
        }
    }

    /// Applies one on-us transaction and hands its record to the log, its answer waiting.
    fn apply_now(&mut self, mut transaction: crate::pipeline::Transaction) {
        // From here on it may be decided (money moved): see `Transaction::guard`.
        transaction.guard.disarm();
        let started = Instant::now();
        if !self.wal.try_reserve() {
            // Nothing applied: a full log queue sheds (91); a failed log answers 96 until the
            // process restarts.
            let code = if self.wal.has_failed() {
                ResponseCode::SystemMalfunction
            } else {
                ResponseCode::IssuerUnavailable
            };
            return reply(transaction, Outcome::decline(code), true);
        }
        let at_seconds = unix_seconds();
        let posting = transaction.request.posting();
        let outcome = self.shard.apply(&posting, at_seconds);
        if self.cold_failed() {
            return reply(
                transaction,
                Outcome::decline(ResponseCode::SystemMalfunction),
                true,
            );
        }
        let mut payload = Vec::with_capacity(128);
        let entry = Entry::Applied {
            posting,
            at_seconds,
            fingerprint: transaction.fingerprint,
            outcome,
        };
        format::encode_entry(&entry, &mut payload);
        let logged = Instant::now();
        metrics().observe(Stage::Ledger, logged - started);
        transaction.logged = Some(logged);
        let waiting = Waiting::Answer(Reply {
            transaction,
            outcome,
            shed: false,
        });
        if let Err(submission) = self.wal.submit(Submission {
            payload: Some(payload),
            completion: waiting,
        }) {
            release(submission.completion, Durability::Failed, 0, None);
        }
    }
}

/// Asks a shard for the total of its balances (card accounts plus settlement), for checks.
#[derive(Debug, Message)]
#[rtype(result = "i128")]
pub struct ShardTotal;

impl Handler<ShardTotal> for LedgerActor {
    type Result = MessageResult<ShardTotal>;
    fn handle(&mut self, _: ShardTotal, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.shard.total())
    }
}

/// A change the admin API makes to an account: through the same shard and WAL as ISO 8583
/// traffic, and answered once durable.
#[derive(Debug)]
pub enum Change {
    /// A top-up (a deposit) or withdrawal, as a posting of the admin API's acquirer.
    Post {
        posting: Posting,
        fingerprint: u64,
    },
    Open {
        card: CardToken,
        account: Account,
    },
    Block {
        card: CardToken,
        blocked: bool,
    },
}

/// What is called with an admin change's outcome once it is durable (96 if it could not be
/// made durable), on the WAL writer's thread.
pub struct AdminDone(pub Box<dyn FnOnce(Outcome) + Send>);

impl AdminDone {
    pub fn call(self, outcome: Outcome) {
        (self.0)(outcome);
    }
}

impl std::fmt::Debug for AdminDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminDone")
    }
}

/// Asks a shard to make an admin change; `done` gets the outcome once it is durable (96 if
/// the log failed or is full; for `Open` and `Block`, 94 if the account exists already, 14 if
/// there is none).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Admin {
    pub change: Change,
    pub done: AdminDone,
}

impl Handler<Admin> for LedgerActor {
    type Result = ();
    fn handle(&mut self, Admin { change, done }: Admin, _: &mut Self::Context) {
        if !self.wal.try_reserve() {
            done.call(Outcome::decline(ResponseCode::SystemMalfunction));
            return;
        }
        let at_seconds = unix_seconds();
        let (entry, outcome) = match change {
            Change::Post {
                posting,
                fingerprint,
            } => {
                let outcome = self.shard.apply(&posting, at_seconds);
                if self.cold_failed() {
                    done.call(Outcome::decline(ResponseCode::SystemMalfunction));
                    return;
                }
                let entry = Entry::Applied {
                    posting,
                    at_seconds,
                    fingerprint,
                    outcome,
                };
                (Some(entry), outcome)
            }
            Change::Open { card, account } => {
                if self.shard.open(card, account) {
                    let entry = Entry::AccountOpened {
                        at_seconds,
                        card,
                        account,
                    };
                    (Some(entry), Outcome::decline(ResponseCode::Approved))
                } else {
                    (None, Outcome::decline(ResponseCode::DuplicateTransmission))
                }
            }
            Change::Block { card, blocked } => {
                if self.shard.set_blocked(&card, blocked) {
                    let entry = Entry::AccountBlocked {
                        at_seconds,
                        card,
                        blocked,
                    };
                    (Some(entry), Outcome::decline(ResponseCode::Approved))
                } else {
                    (None, Outcome::decline(ResponseCode::InvalidCardNumber))
                }
            }
        };
        // A refusal that changed nothing still waits its turn in the log, so that it is not
        // answered before the records it may depend on.
        let payload = entry.map(|entry| {
            let mut payload = Vec::with_capacity(128);
            format::encode_entry(&entry, &mut payload);
            payload
        });
        if let Err(submission) = self.wal.submit(Submission {
            payload,
            completion: Waiting::Admin(done, outcome),
        }) {
            release(submission.completion, Durability::Failed, 0, None);
        }
    }
}

/// Reads one kept transaction (admin API), without logging anything.
#[derive(Debug, Message)]
#[rtype(result = "Option<super::shard::Record>")]
pub struct GetRecord(pub crate::domain::TxnKey);

impl Handler<GetRecord> for LedgerActor {
    type Result = MessageResult<GetRecord>;
    fn handle(&mut self, GetRecord(key): GetRecord, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.shard.transaction(&key))
    }
}

/// Reads one account (admin API), without logging anything.
#[derive(Debug, Message)]
#[rtype(result = "Option<Account>")]
pub struct GetAccount(pub CardToken);

impl Handler<GetAccount> for LedgerActor {
    type Result = MessageResult<GetAccount>;
    fn handle(&mut self, GetAccount(card): GetAccount, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.shard.account(&card).copied())
    }
}
