//! What travels the request path: a [`Transaction`] from the acquirer session through risk,
//! routing and a ledger shard, and the [`Reply`] that comes back to the session, once durable.

use std::time::Instant;

use actix::prelude::*;
use tokio::sync::OwnedSemaphorePermit;

use crate::domain::{Outcome, Request, RequestIdentity, ResponseCode};
use crate::ops::metrics::Route as RouteLabel;

/// One request on its way through the pipeline, with everything needed to answer it.
#[derive(Debug)]
pub struct Transaction {
    pub request: Request,
    /// The request's message bytes (no frame header), for the fields the response echoes.
    /// Copied off the read buffer; decoded again, borrowing, to answer.
    pub frame: bytes::Bytes,
    pub identity: RequestIdentity,
    /// Digest of the request, logged with the outcome for retransmissions after a restart.
    pub fingerprint: u64,
    /// Where its answer goes: the session that read it, on the worker that serves it.
    pub reply_to: ReplyTo,
    /// The session's in-flight slot; released once the response is written.
    pub permit: OwnedSemaphorePermit,
    /// When its frame was read, for the stage and total latencies.
    pub received: Instant,
    /// Where routing sent it (the metrics' `route` label).
    pub route: RouteLabel,
    /// When its record was submitted to the WAL, for the WAL stage's latency.
    pub logged: Option<Instant>,
    /// The approvals it counts in advance in the risk velocity tables: kept if it is approved,
    /// given back otherwise (when this is dropped).
    pub velocity: crate::risk::Passed,
    /// The rule that declined it, for the log line and the admin API.
    pub rule: Option<std::sync::Arc<str>>,
    /// Why a risk score flagged it for review (shown if it is approved).
    pub flag: Option<std::sync::Arc<str>>,
    /// Its place among its acquirer's requests being decided (`acquirers.inflight_max`),
    /// given back with the transaction once it is answered.
    pub acquirer_slot: Option<OwnedSemaphorePermit>,
    /// For a remote card: the issuer that decided it, and how it got there.
    pub via: Option<Via>,
    /// Armed until the transaction reaches what decides it (its ledger shard or issuer
    /// channel) or is answered: dropped before (a worker that stopped with it queued, a
    /// panic), it gives the identity back with 96, so that a retransmission is decided anew
    /// instead of waiting for an answer that will never come. Past that point its decision
    /// may be durable (money moved, an issuer asked): dropped then, the identity stays in
    /// flight and a retransmission gets 91, never a second decision.
    pub guard: Unanswered,
}

/// See [`Transaction::guard`].
#[derive(Debug)]
pub struct Unanswered(Option<(std::sync::Arc<dyn Answer>, RequestIdentity)>);

impl Unanswered {
    pub fn new(session: std::sync::Arc<dyn Answer>, identity: RequestIdentity) -> Unanswered {
        Unanswered(Some((session, identity)))
    }

    /// The transaction is being answered.
    pub fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some((session, identity)) = self.0.take() {
            session.unanswered(&identity);
        }
    }
}

/// The issuer channel a remote transaction went to, for its log line and the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Via {
    pub issuer: std::sync::Arc<str>,
    /// `primary`, `fallback` (the primary was down) or `stand-in` (the switch decided).
    pub how: &'static str,
}

/// The pipeline's answer for one transaction.
#[derive(Debug)]
pub struct Reply {
    pub transaction: Transaction,
    pub outcome: Outcome,
    /// Shed before any decision (overload, or no issuer link): a retransmission is tried anew.
    pub shed: bool,
}

/// What answers a transaction on its session: records the outcome for idempotency, encodes
/// the response and queues it for the connection's writer. Callable from any thread.
pub trait Answer: Send + Sync + std::fmt::Debug {
    /// Answers; the first thing it does is [`Unanswered::disarm`].
    fn answer(&self, reply: Reply);
    /// A transaction of this session was dropped without an answer.
    fn unanswered(&self, identity: &RequestIdentity);
}

/// Where a transaction's answer goes.
#[derive(Clone, Debug)]
pub struct ReplyTo {
    pub session: std::sync::Arc<dyn Answer>,
    /// The worker serving the session, and its answerer: the WAL writer hands each worker the
    /// answers of a group in one message ([`Replies`]), not one wake-up per answer.
    pub worker: usize,
    /// Shared, not cloned per request: cloning an actix address allocates.
    pub answerer: std::sync::Arc<Addr<Answerer>>,
}

/// Answers on a worker's thread.
#[derive(Debug, Default)]
pub struct Answerer;

impl Actor for Answerer {
    type Context = Context<Self>;
}

/// The answers for one worker's sessions that one WAL group released.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Replies(pub Vec<Reply>);

impl Handler<Replies> for Answerer {
    type Result = ();
    fn handle(&mut self, Replies(replies): Replies, _: &mut Self::Context) {
        for reply in replies {
            let session = reply.transaction.reply_to.session.clone();
            session.answer(reply);
        }
    }
}

/// Answers `transaction` at once, on this thread (a decision made before the log: a risk
/// decline, a shed, an issuer's refusal).
pub fn reply(transaction: Transaction, outcome: Outcome, shed: bool) {
    let session = transaction.reply_to.session.clone();
    session.answer(Reply {
        transaction,
        outcome,
        shed,
    });
}

pub fn shed(transaction: Transaction) {
    reply(
        transaction,
        Outcome::decline(ResponseCode::IssuerUnavailable),
        true,
    );
}

/// On-us transactions for one ledger shard, in the order a worker routed them.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Post(pub Vec<Transaction>);

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::{Answer, Reply, Unanswered};
    use crate::domain::RequestIdentity;

    #[derive(Debug, Default)]
    struct Counting {
        unanswered: AtomicUsize,
    }

    impl Answer for Counting {
        fn answer(&self, _: Reply) {}
        fn unanswered(&self, _: &RequestIdentity) {
            self.unanswered.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn identity() -> RequestIdentity {
        RequestIdentity {
            acquirer: 123_456,
            stan: 1,
            transmission: 1_130_120_000,
            terminal: *b"TERM0001",
        }
    }

    #[test]
    fn a_transaction_dropped_unanswered_gives_its_identity_back_once_and_an_answered_one_does_not()
    {
        let session = Arc::new(Counting::default());
        drop(Unanswered::new(session.clone(), identity()));
        assert_eq!(session.unanswered.load(Ordering::Relaxed), 1);
        let mut answered = Unanswered::new(session.clone(), identity());
        answered.disarm();
        drop(answered);
        assert_eq!(session.unanswered.load(Ordering::Relaxed), 1);
    }
}
