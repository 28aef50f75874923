//! The issuer channel actor: one per `[[issuers]]` entry, the single owner of that issuer's
//! links, outstanding requests and store-and-forward queue.
//!
//! - **Multiplexing.** Every message the switch sends the issuer carries the switch's own
//!   field 11, unique among the channel's outstanding messages, so that acquirers' STANs never
//!   collide; an answer is matched by field 11, then checked against the expected response
//!   MTI and field 41. A malformed, unmatched (late, duplicate, unknown) or mismatched answer
//!   is logged and counted and answers nothing; [`ISSUER_GARBAGE_MAX`] of them in a row close
//!   the link, which reconnects.
//! - **Decisions are logged.** The issuer's answer, a timeout (91) and a stand-in decision
//!   are each a `Remote` WAL record, answered once durable, restored into the idempotency
//!   table on recovery: a retransmission gets the same answer, before and after a restart.
//! - **Timeouts.** The acquirer gets 91 once `timeout` passes, and a reversal (0420) of the
//!   timed-out request is queued in the same record. A late approval is thereby reversed too.
//! - **Store and forward.** Queued messages (reversals, advices) are sent until the issuer
//!   acknowledges them (0430, 0130, 0230), with a growing delay between attempts, repeats as
//!   0421 / 0121 / 0221; each ends in an `AdviceDone` record, delivered or given up (after
//!   `attempts_max` sends or `advice_expiry`). The records that queued them are kept from
//!   pruning ([`super::pins`]) and rebuild the queue on recovery.
//! - **Health.** Up when every link is signed on (0800/001), degraded when some are, down
//!   when none is or the circuit breaker is open (`breaker_failures` timeouts in a row; it
//!   stays open `breaker_open`, then lets traffic through again). Idle links are checked
//!   with an echo (0800/301); a link whose sign-on or echo fails is closed and reconnects.
//! - **Stand-in.** While the channel is down, a request the stand-in rules allow is approved
//!   by the switch, recorded, and advised to the issuer (0120) through the queue.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use adapters::{Dialect, Message, Mti};
use tokio::sync::{mpsc, oneshot, watch};

use super::book::Book;
use super::link::{self, LinkEvent};
use super::message::{self, Sealer};
use super::pins::Pins;
use super::{Health, HealthState, IssuerSettings};
use crate::clock::unix_seconds;
use crate::domain::{Outcome, ResponseCode, TxnKey};
use crate::ledger::actor::{AfterLogged, TakeSnapshot, Waiting, release};
use crate::limits::{ADVICES_IN_FLIGHT_MAX, ISSUER_GARBAGE_MAX, ISSUER_MESSAGE_BYTES_MAX};
use crate::ops::metrics::metrics;
use crate::pipeline::{Reply, Transaction, reply, shed};
use crate::recovery::Settled;
use crate::wal::format::{self, Advice, Entry};
use crate::wal::writer::{Durability, Submission, Wal};

/// How often timeouts are looked for: the acquirer hears 91 at most this much after `timeout`.
const TIMEOUT_TICK: Duration = Duration::from_millis(10);
/// How often queued advices, idle links and the breaker are looked at.
const HOUSEKEEPING_TICK: Duration = Duration::from_millis(100);

/// A transaction for this issuer, from routing; for a reversal or completion, the other
/// issuers of its route, asked in turn if this one does not know the original.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Forward(pub Transaction, pub Vec<Addr<IssuerChannel>>);

/// A request's `RemoteSent` record is durable at `lsn` (or failed: `None`): it may go out.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Logged {
    stan: u32,
    serial: u64,
    lsn: Option<u64>,
}

/// A queued advice, once the record that queued it is durable at `lsn`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Enqueue {
    advice: Advice,
    lsn: u64,
}

/// What the channel needs from the rest of the switch.
#[derive(Clone, Debug)]
pub struct ChannelContext {
    pub wal: Wal<Waiting>,
    pub pins: Arc<Pins>,
    pub sealer: Arc<Sealer>,
    /// The dialect acquirers speak, to read a transaction's frame.
    pub acquirer_dialect: &'static Dialect,
    pub health: Arc<Health>,
    /// TLS to the issuer (`[issuers.tls]`), read at start.
    pub tls: Option<super::tls::Client>,
}

#[derive(Debug)]
struct Link {
    generation: u64,
    writer: Option<mpsc::Sender<Vec<u8>>>,
    close: Option<oneshot::Sender<()>>,
    signed_on: bool,
    /// An echo or sign-on is outstanding.
    checking: bool,
    last_traffic: Instant,
    /// Malformed or unmatched answers in a row.
    garbage: u32,
}

// Nearly every outstanding message is a request: boxing it would cost an allocation each.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Purpose {
    Request {
        transaction: Transaction,
        sent_mti: [u8; 4],
        /// The message, while its `RemoteSent` record is being made durable; `None` once sent.
        outgoing: Option<Box<Message<'static>>>,
        /// The LSN of its `RemoteSent` record, once durable: kept from pruning until the
        /// decision's record is durable.
        sent_lsn: Option<u64>,
        /// Its reversal, queued if it times out (or by recovery, if no decision was logged);
        /// `None` once an acquirer's reversal that overtook the answer has queued it.
        reversal: Option<Advice>,
    },
    SignOn,
    Echo,
    Advice {
        id: u128,
    },
}

#[derive(Debug)]
struct Pending {
    serial: u64,
    slot: usize,
    generation: u64,
    response_mti: Mti,
    /// Fields 41, 7 and 37 as sent: an answer that carries one must carry the same, so that a
    /// very late answer cannot be taken for a later request under a reused field 11.
    echoed: Vec<(u8, Vec<u8>)>,
    purpose: Purpose,
}

/// Fields an answer must echo unchanged when it carries them.
const MATCHED_FIELDS: [u8; 3] = [41, 7, 37];

/// What the answer to a message must look like: its MTI, and the fields it must echo.
type Expected = (Mti, Vec<(u8, Vec<u8>)>);

fn expectation(sent: &Message<'_>) -> Option<Expected> {
    Some((
        sent.mti.response()?,
        MATCHED_FIELDS
            .iter()
            .filter_map(|&f| sent.get(f).map(|v| (f, v.to_vec())))
            .collect(),
    ))
}

#[derive(Debug)]
struct Queued {
    advice: Advice,
    lsn: u64,
    attempts: u32,
    next_try: Instant,
    /// Sent before (in this process or, for a queue rebuilt from the log, maybe before the
    /// restart): later sends are repeats.
    sent_before: bool,
    in_flight: bool,
}

#[derive(Debug)]
pub struct IssuerChannel {
    settings: Arc<IssuerSettings>,
    dialect: &'static Dialect,
    context: ChannelContext,
    links: Vec<Link>,
    next_link: usize,
    stop: watch::Sender<bool>,
    next_stan: u32,
    serial: u64,
    pending: HashMap<u32, Pending>,
    /// The field 11 of each outstanding request, by the acquirer's key (reversals that
    /// overtake their original's answer look it up).
    pending_by_key: HashMap<TxnKey, u32>,
    /// (deadline, STAN, serial) in sending order: with one timeout per kind, deadlines come
    /// in order, so the front is always the next due.
    deadlines: VecDeque<(Instant, u32, u64)>,
    timeouts_in_row: u32,
    breaker_until: Option<Instant>,
    /// After the breaker's open time: one request (the probe) goes out; the rest wait for its
    /// answer (stand-in or 91). An answer closes the breaker; a timeout opens it again.
    half_open: bool,
    probe: Option<u32>,
    queue: BTreeMap<u128, Queued>,
    advices_in_flight: usize,
    originals: Book,
    /// Advice ids: the process start in nanoseconds above, a counter below.
    id_base: u128,
    id_counter: u64,
    me: Option<Addr<IssuerChannel>>,
    /// Housekeeping ticks, for what runs every so many.
    ticks: u64,
    /// Requests recovery found sent with no decision logged: closed once started.
    settled: Vec<Settled>,
}

impl IssuerChannel {
    /// A channel with the queue and the approvals the log holds for it (each with whether it
    /// was reversed already).
    pub fn new(
        settings: IssuerSettings,
        context: ChannelContext,
        queued: Vec<(u64, Advice)>,
        sent: Vec<(TxnKey, [u8; 4], u32, bool)>,
        settled: Vec<Settled>,
    ) -> IssuerChannel {
        let originals_max = settings.originals_max;
        let now = Instant::now();
        let id_base = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
            << 64;
        let mut channel = IssuerChannel {
            dialect: settings.dialect.dialect(),
            settings: Arc::new(settings),
            context,
            links: Vec::new(),
            next_link: 0,
            stop: watch::channel(false).0,
            // From the clock, so that a quick restart does not reuse the fields 11 (and so the
            // fields 90 of reversals) of the requests just before it.
            next_stan: u32::try_from(unix_seconds() % 999_999).unwrap_or(0),
            serial: 0,
            pending: HashMap::new(),
            pending_by_key: HashMap::new(),
            deadlines: VecDeque::new(),
            timeouts_in_row: 0,
            breaker_until: None,
            half_open: false,
            probe: None,
            queue: BTreeMap::new(),
            advices_in_flight: 0,
            originals: Book::new(originals_max),
            id_base,
            id_counter: 0,
            me: None,
            ticks: 0,
            settled,
        };
        for (lsn, advice) in queued {
            channel.queue.insert(
                advice.id,
                Queued {
                    advice,
                    lsn,
                    attempts: 0,
                    next_try: now,
                    sent_before: true,
                    in_flight: false,
                },
            );
        }
        for (key, mti, stan, reversed) in sent {
            channel.remember(key, mti, stan);
            if reversed {
                channel.originals.set_reversed(&key);
            }
        }
        channel
    }

    fn name(&self) -> &str {
        &self.settings.name
    }

    fn remember(&mut self, key: TxnKey, mti: [u8; 4], stan: u32) {
        self.originals.insert(key, mti, stan);
    }

    fn breaker_open(&self, now: Instant) -> bool {
        self.breaker_until.is_some_and(|until| now < until)
    }

    /// Whether requests can be sent now.
    fn available(&self, now: Instant) -> bool {
        let probing = self.half_open && self.probe.is_some();
        !self.breaker_open(now) && !probing && self.links.iter().any(|l| l.signed_on)
    }

    fn update_health(&self) {
        let signed = self.links.iter().filter(|l| l.signed_on).count();
        // While the probe is out the channel takes nothing more: down, so routing prefers a
        // fallback.
        let probing = self.half_open && self.probe.is_some();
        let state = if self.breaker_open(Instant::now()) || signed == 0 || probing {
            HealthState::Down
        } else if signed == self.links.len() && !self.half_open {
            HealthState::Up
        } else {
            HealthState::Degraded
        };
        self.context.health.set(state);
        let gauge = match state {
            HealthState::Up => 2,
            HealthState::Degraded => 1,
            HealthState::Down => 0,
        };
        metrics().issuer_state(self.name(), gauge, self.queue.len(), self.pending.len());
    }

    fn take_stan(&mut self) -> u32 {
        // At most inflight_max + advices + checks are outstanding, far below a million.
        loop {
            self.next_stan = self.next_stan % 999_999 + 1;
            if !self.pending.contains_key(&self.next_stan) {
                return self.next_stan;
            }
        }
    }

    /// Frames `message` and hands it to link `slot`; false if it could not be.
    fn send_on(&mut self, slot: usize, message: &Message<'_>) -> bool {
        let framing = self.settings.framing;
        let mut frame = vec![0u8; framing.header_len()];
        if let Err(error) = self.dialect.encode(message, &mut frame) {
            tracing::error!(issuer = self.name(), %error, "cannot encode a message for the issuer");
            return false;
        }
        let body_len = frame.len() - framing.header_len();
        if framing.fill(body_len, &mut frame).is_err() {
            return false;
        }
        let Some(link) = self.links.get_mut(slot) else {
            return false;
        };
        match &link.writer {
            Some(writer) if writer.try_send(frame).is_ok() => {
                link.last_traffic = Instant::now();
                true
            }
            _ => false,
        }
    }

    /// A signed-on link, round robin.
    fn pick_link(&mut self) -> Option<usize> {
        let n = self.links.len();
        (0..n)
            .map(|i| (self.next_link + i) % n)
            .find(|&slot| self.links[slot].signed_on)
            .inspect(|&slot| self.next_link = (slot + 1) % n)
    }

    fn track(&mut self, stan: u32, slot: usize, sent: &Message<'_>, purpose: Purpose) -> u64 {
        match expectation(sent) {
            Some(expected) => self.track_expecting(stan, slot, expected, purpose),
            None => 0,
        }
    }

    fn track_expecting(
        &mut self,
        stan: u32,
        slot: usize,
        (response_mti, echoed): Expected,
        purpose: Purpose,
    ) -> u64 {
        self.serial += 1;
        if let Purpose::Request { transaction, .. } = &purpose {
            self.pending_by_key.insert(transaction.identity, stan);
        }
        let generation = self.links.get(slot).map_or(0, |l| l.generation);
        self.pending.insert(
            stan,
            Pending {
                serial: self.serial,
                slot,
                generation,
                response_mti,
                echoed,
                purpose,
            },
        );
        self.deadlines
            .push_back((Instant::now() + self.settings.timeout, stan, self.serial));
        // Answered messages leave their deadlines behind until they pass: at a high rate and
        // a long timeout that would be rate × timeout entries. Past a bound set by the
        // outstanding limit, the ones of answered messages are dropped (amortised O(1)).
        let bound = 4 * (self.settings.inflight_max + ADVICES_IN_FLIGHT_MAX + 64);
        if self.deadlines.len() > bound {
            let pending = &self.pending;
            self.deadlines
                .retain(|(_, stan, serial)| pending.get(stan).is_some_and(|p| p.serial == *serial));
        }
        self.serial
    }

    fn forward(&mut self, transaction: Transaction, others: Vec<Addr<IssuerChannel>>) {
        let now = Instant::now();
        let frame = transaction.frame.clone();
        let Ok(request) = self.context.acquirer_dialect.decode(&frame) else {
            return reply(
                transaction,
                Outcome::decline(ResponseCode::SystemMalfunction),
                true,
            );
        };
        // A message too large for an issuer link could not be queued for reversal either.
        if frame.len() > ISSUER_MESSAGE_BYTES_MAX {
            return reply(
                transaction,
                Outcome::decline(ResponseCode::FormatError),
                false,
            );
        }
        if transaction.request.kind.refers_to_original() {
            return self.forward_advice(transaction, &request, others);
        }
        if !self.available(now) {
            return self.stand_in(transaction, &request);
        }
        if self.pending.len() >= self.settings.inflight_max
            || self.queue.len() >= self.settings.queue_max
        {
            metrics().issuer_event(self.name(), "shed");
            return shed(transaction);
        }
        // Logged before it goes out, with its reversal: should the switch stop before a
        // decision is logged, recovery queues the reversal (the issuer may have approved).
        let stan = self.take_stan();
        let sent = message::forward(&request, stan).into_owned();
        let reversal = message::reversal_of(&sent).map(|mut r| {
            r.set(11, message::stan_field(self.take_stan()));
            r
        });
        let id = self.next_id();
        let Some(reversal) = reversal.and_then(|r| self.seal(id, &r)) else {
            return reply(
                transaction,
                Outcome::decline(ResponseCode::FormatError),
                false,
            );
        };
        if !self.context.wal.reserve_beyond_bound() {
            return reply(
                transaction,
                Outcome::decline(ResponseCode::SystemMalfunction),
                true,
            );
        }
        let sent_mti = sent.mti.0;
        let entry = Entry::RemoteSent {
            at_seconds: unix_seconds(),
            issuer: self.settings.name.clone(),
            key: transaction.identity,
            fingerprint: transaction.fingerprint,
            sent: (sent_mti, stan),
            reversal: reversal.clone(),
        };
        let Some(expected) = expectation(&sent) else {
            self.context.wal.unreserve();
            return reply(
                transaction,
                Outcome::decline(ResponseCode::InvalidTransaction),
                false,
            );
        };
        if self.half_open {
            tracing::info!(
                issuer = self.settings.name,
                "circuit breaker half open: one request goes out as a probe"
            );
            self.probe = Some(stan);
        }
        // Not on a link yet: `slot` is set when it goes out.
        let serial = self.track_expecting(
            stan,
            usize::MAX,
            expected,
            Purpose::Request {
                transaction,
                sent_mti,
                outgoing: Some(Box::new(sent)),
                sent_lsn: None,
                reversal: Some(reversal),
            },
        );
        let (me, pins) = (self.me.clone(), self.context.pins.clone());
        let then = AfterLogged(Box::new(move |durability, lsn| {
            let lsn = (durability == Durability::Durable).then(|| {
                pins.pin(lsn);
                lsn
            });
            match me {
                Some(me) => me.do_send(Logged { stan, serial, lsn }),
                None => {
                    if let Some(lsn) = lsn {
                        pins.unpin(lsn);
                    }
                }
            }
        }));
        self.submit(
            &entry,
            Waiting::Remote {
                reply: None,
                then: Some(then),
            },
        );
    }

    /// Takes an outstanding message off the books.
    fn remove_pending(&mut self, stan: u32) -> Option<Pending> {
        let pending = self.pending.remove(&stan)?;
        if let Purpose::Request { transaction, .. } = &pending.purpose
            && self.pending_by_key.get(&transaction.identity) == Some(&stan)
        {
            self.pending_by_key.remove(&transaction.identity);
        }
        Some(pending)
    }

    /// A request that never went out (no link, an overtaking reversal, or a timeout while its
    /// `RemoteSent` record was being made durable): 91 with nothing to reverse, naming the
    /// request so that recovery matches it to its `RemoteSent`.
    fn close_unsent(
        &mut self,
        transaction: Transaction,
        sent_mti: [u8; 4],
        stan: u32,
        sent_lsn: Option<u64>,
    ) {
        self.not_sent(stan);
        self.log(
            transaction,
            Outcome::decline(ResponseCode::IssuerUnavailable),
            Some((sent_mti, stan)),
            None,
            None,
            sent_lsn,
        );
    }

    /// A probe that never went out: the next request is the probe.
    fn not_sent(&mut self, stan: u32) {
        if self.probe == Some(stan) {
            self.probe = None;
        }
    }

    /// A request's `RemoteSent` record is durable: it goes out now, on a signed-on link.
    fn logged(&mut self, stan: u32, serial: u64, lsn: Option<u64>) {
        let current = self.pending.get(&stan).is_some_and(|p| p.serial == serial);
        if !current {
            // Timed out while being logged: its 91 (nothing sent) is logged already.
            if let Some(lsn) = lsn {
                self.context.pins.unpin(lsn);
            }
            return;
        }
        let Some(lsn) = lsn else {
            // The log failed: nothing was sent, nothing is decided; the answer is 96.
            self.not_sent(stan);
            if let Some(Pending {
                purpose: Purpose::Request { transaction, .. },
                ..
            }) = self.remove_pending(stan)
            {
                reply(
                    transaction,
                    Outcome::decline(ResponseCode::SystemMalfunction),
                    true,
                );
            }
            return;
        };
        let slot = self.pick_link();
        let generation = slot
            .and_then(|s| self.links.get(s))
            .map_or(0, |l| l.generation);
        let Some(pending) = self.pending.get_mut(&stan) else {
            return;
        };
        let Purpose::Request {
            outgoing, sent_lsn, ..
        } = &mut pending.purpose
        else {
            return;
        };
        *sent_lsn = Some(lsn);
        let Some(message) = outgoing.take() else {
            return;
        };
        if let Some(slot) = slot {
            pending.slot = slot;
            pending.generation = generation;
        }
        if slot.is_some_and(|slot| self.send_on(slot, &message)) {
            metrics().issuer_event(self.name(), "sent");
            return;
        }
        // No link took it: nothing went out.
        metrics().issuer_event(self.name(), "shed");
        if let Some(Pending {
            purpose:
                Purpose::Request {
                    transaction,
                    sent_mti,
                    ..
                },
            ..
        }) = self.remove_pending(stan)
        {
            self.close_unsent(transaction, sent_mti, stan, Some(lsn));
        }
    }

    /// The channel cannot send: a stand-in approval where the rules allow, else 91 (nothing
    /// was sent, so nothing is decided: a retransmission is tried anew).
    fn stand_in(&mut self, transaction: Transaction, request: &Message<'_>) {
        if !self.stand_in_allows(&transaction.request) {
            metrics().issuer_event(self.name(), "shed");
            return shed(transaction);
        }
        metrics().issuer_event(self.name(), "stand_in");
        let mut transaction = transaction;
        if let Some(via) = &mut transaction.via {
            via.how = "stand-in";
        }
        let Some((auth_id, advice_mti, stan, advice)) = self.stand_in_advice(request) else {
            // No approval the issuer would never hear of.
            return shed(transaction);
        };
        self.remember(transaction.identity, advice_mti, stan);
        let outcome = Outcome {
            code: ResponseCode::Approved,
            auth_id: Some(auth_id),
            balances: None,
        };
        tracing::info!(
            issuer = self.name(),
            stan = transaction.identity.stan,
            "issuer down: approved in stand-in, advice queued"
        );
        self.log(
            transaction,
            outcome,
            Some((advice_mti, stan)),
            Some(advice),
            None,
            None,
        );
    }

    /// Whether the stand-in rules approve `request` (and the queue has room for its advice).
    fn stand_in_allows(&self, r: &crate::domain::Request) -> bool {
        let allowed = self.settings.stand_in.as_ref().is_some_and(|rules| {
            r.kind.is_debit()
                && r.currency.unwrap_or(rules.currency) == rules.currency
                && r.amount <= rules.amount_max
                && (rules.merchant_categories.is_empty()
                    || r.merchant_category
                        .is_some_and(|m| rules.merchant_categories.contains(&m)))
        });
        allowed && self.queue.len() < self.settings.queue_max
    }

    /// A stand-in approval's authorization code and its 0120 advice (sealed, with a field 11
    /// of its own kept for all its sends, so that a reversal can name it); `None` if the
    /// advice cannot be encoded.
    fn stand_in_advice(
        &mut self,
        request: &Message<'_>,
    ) -> Option<([u8; 6], [u8; 4], u32, Advice)> {
        let id = self.next_id();
        let auth_id = stand_in_code(id);
        let mut advice = message::stand_in_advice(request, auth_id);
        let stan = self.take_stan();
        advice.set(11, message::stan_field(stan));
        let mti = advice.mti.0;
        let sealed = self.seal(id, &advice)?;
        Some((auth_id, mti, stan, sealed))
    }

    /// An acquirer's reversal or completion of a remote transaction: acknowledged once the
    /// advice for the issuer is queued durably; 25 if the switch does not know the original.
    fn forward_advice(
        &mut self,
        transaction: Transaction,
        request: &Message<'_>,
        mut others: Vec<Addr<IssuerChannel>>,
    ) {
        let Some(key) = transaction.request.original else {
            return reply(
                transaction,
                Outcome::decline(ResponseCode::FormatError),
                false,
            );
        };
        let Some(original) = self.originals.get(&key) else {
            // Its original still outstanding here (the answer not yet in).
            if transaction.request.kind.is_reversal() && self.pending_by_key.contains_key(&key) {
                return self.reversal_of_pending(transaction, key);
            }
            if !others.is_empty() {
                let next = others.remove(0);
                if let Err(error) = next.try_send(Forward(transaction, others)) {
                    let (SendError::Full(Forward(transaction, _))
                    | SendError::Closed(Forward(transaction, _))) = error;
                    shed(transaction);
                }
                return;
            }
            return reply(
                transaction,
                Outcome::decline(ResponseCode::OriginalNotFound),
                false,
            );
        };
        let reversal = transaction.request.kind.is_reversal();
        if reversal && original.reversed {
            // Reversing twice reverses once: acknowledged, nothing more sent.
            return self.log(
                transaction,
                Outcome::decline(ResponseCode::Approved),
                None,
                None,
                Some((key, original.stan)),
                None,
            );
        }
        if self.queue.len() >= self.settings.queue_max {
            metrics().issuer_event(self.name(), "shed");
            return shed(transaction);
        }
        let mut advice = message::advice_of_acquirer_message(
            request,
            original.mti,
            original.stan,
            key.transmission,
            key.acquirer,
        );
        advice.set(11, message::stan_field(self.take_stan()));
        let id = self.next_id();
        let Some(advice) = self.seal(id, &advice) else {
            // Not acknowledged without the advice that carries it to the issuer.
            return reply(
                transaction,
                Outcome::decline(ResponseCode::FormatError),
                false,
            );
        };
        if reversal {
            self.originals.set_reversed(&key);
        }
        self.log(
            transaction,
            Outcome::decline(ResponseCode::Approved),
            None,
            Some(advice),
            reversal.then_some((key, original.stan)),
            None,
        );
    }

    /// An acquirer's reversal of a request still outstanding here (the terminal gave up before
    /// the switch did). Not yet sent: it never will be (91), and the reversal is acknowledged
    /// with nothing to send. Sent: its reversal is queued now, with this acknowledgement, and
    /// its answer or timeout queues nothing more.
    fn reversal_of_pending(&mut self, transaction: Transaction, key: TxnKey) {
        let Some(stan) = self.pending_by_key.get(&key).copied() else {
            return reply(
                transaction,
                Outcome::decline(ResponseCode::OriginalNotFound),
                false,
            );
        };
        let not_sent = matches!(
            self.pending.get(&stan).map(|p| &p.purpose),
            Some(Purpose::Request {
                outgoing: Some(_),
                ..
            })
        );
        if not_sent {
            if let Some(Pending {
                purpose:
                    Purpose::Request {
                        transaction: original,
                        sent_mti,
                        sent_lsn,
                        ..
                    },
                ..
            }) = self.remove_pending(stan)
            {
                self.close_unsent(original, sent_mti, stan, sent_lsn);
            }
            return self.log(
                transaction,
                Outcome::decline(ResponseCode::Approved),
                None,
                None,
                None,
                None,
            );
        }
        let queued = match self.pending.get_mut(&stan).map(|p| &mut p.purpose) {
            Some(Purpose::Request { reversal, .. }) => reversal.take(),
            _ => None,
        };
        tracing::info!(
            issuer = self.settings.name,
            stan = transaction.identity.stan,
            issuer_stan = stan,
            "a reversal overtook its original's answer: the reversal is queued"
        );
        let original = queued.is_some().then_some((key, stan));
        self.log(
            transaction,
            Outcome::decline(ResponseCode::Approved),
            None,
            queued,
            original,
            None,
        );
    }

    fn next_id(&mut self) -> u128 {
        self.id_counter += 1;
        self.id_base | u128::from(self.id_counter)
    }

    /// Logs a decision for `transaction` (with the advice to queue, if any, and the original
    /// an acquirer's reversal reverses) and answers it once durable; then lets go of the
    /// request's `RemoteSent` record at `unpin`, which this decision closes.
    fn log(
        &mut self,
        transaction: Transaction,
        outcome: Outcome,
        sent: Option<([u8; 4], u32)>,
        advice: Option<Advice>,
        original: Option<(TxnKey, u32)>,
        unpin: Option<u64>,
    ) {
        let advices = advice.into_iter().collect();
        self.log_advices(transaction, outcome, sent, advices, original, unpin);
    }

    /// [`Self::log`] with any number of advices queued by the same record.
    fn log_advices(
        &mut self,
        transaction: Transaction,
        outcome: Outcome,
        sent: Option<([u8; 4], u32)>,
        advices: Vec<Advice>,
        original: Option<(TxnKey, u32)>,
        unpin: Option<u64>,
    ) {
        if !self.context.wal.reserve_beyond_bound() {
            // The log has failed: the process is ending. A request sent has its RemoteSent
            // record, from which recovery queues the reversal.
            return reply(
                transaction,
                Outcome::decline(ResponseCode::SystemMalfunction),
                true,
            );
        }
        let entry = Entry::Remote {
            at_seconds: unix_seconds(),
            issuer: self.settings.name.clone(),
            key: transaction.identity,
            fingerprint: transaction.fingerprint,
            outcome,
            sent,
            advices: advices.clone(),
            original,
        };
        let enqueue: Vec<AfterLogged> = advices
            .into_iter()
            .map(|advice| self.enqueue_when_logged(advice))
            .collect();
        let pins = self.context.pins.clone();
        let then = match (enqueue.is_empty(), unpin) {
            (true, None) => None,
            (_, unpin) => Some(AfterLogged(Box::new(move |durability, lsn| {
                for enqueue in enqueue {
                    (enqueue.0)(durability, lsn);
                }
                if durability == Durability::Durable
                    && let Some(unpin) = unpin
                {
                    pins.unpin(unpin);
                }
            }))),
        };
        self.submit(
            &entry,
            Waiting::Remote {
                reply: Some(Reply {
                    transaction,
                    outcome,
                    shed: false,
                }),
                then,
            },
        );
    }

    /// Logs the decision of a request recovery found sent with no decision: 91 (the acquirer
    /// heard nothing; a retransmission gets this), its reversal queued, and its `RemoteSent`
    /// record let go of once this is durable.
    fn close_settled(&mut self, settled: Settled) {
        if !self.context.wal.reserve_beyond_bound() {
            return;
        }
        let entry = Entry::Remote {
            at_seconds: unix_seconds(),
            issuer: self.settings.name.clone(),
            key: settled.key,
            fingerprint: settled.fingerprint,
            outcome: Outcome::decline(ResponseCode::IssuerUnavailable),
            sent: Some((settled.mti, settled.stan)),
            advices: (!settled.reversal_queued)
                .then(|| settled.reversal.clone())
                .into_iter()
                .collect(),
            original: None,
        };
        let enqueue =
            (!settled.reversal_queued).then(|| self.enqueue_when_logged(settled.reversal));
        let pins = self.context.pins.clone();
        let lsn_sent = settled.lsn;
        self.submit(
            &entry,
            Waiting::Remote {
                reply: None,
                then: Some(AfterLogged(Box::new(move |durability, lsn| {
                    if let Some(enqueue) = enqueue {
                        (enqueue.0)(durability, lsn);
                    }
                    if durability == Durability::Durable {
                        pins.unpin(lsn_sent);
                    }
                }))),
            },
        );
    }

    fn seal(&self, id: u128, message: &Message<'_>) -> Option<Advice> {
        let mut bytes = Vec::with_capacity(256);
        if let Err(error) = self.dialect.encode(message, &mut bytes) {
            tracing::error!(issuer = self.name(), %error, "cannot encode an advice for the issuer");
            return None;
        }
        Some(Advice {
            id,
            issuer: self.settings.name.clone(),
            created_seconds: unix_seconds(),
            sealed: self.context.sealer.seal(id, &bytes),
        })
    }

    /// Once the record is durable: pin it and queue the advice; if it failed, the advice was
    /// never queued (and the answer is 96).
    fn enqueue_when_logged(&self, advice: Advice) -> AfterLogged {
        let me = self.me.clone();
        let pins = self.context.pins.clone();
        AfterLogged(Box::new(move |durability, lsn| {
            if durability == Durability::Durable {
                pins.pin(lsn);
                if let Some(me) = me {
                    me.do_send(Enqueue { advice, lsn });
                }
            }
        }))
    }

    fn submit(&self, entry: &Entry, waiting: Waiting) {
        let mut payload = Vec::with_capacity(128);
        format::encode_entry(entry, &mut payload);
        if let Err(submission) = self.context.wal.submit(Submission {
            payload: Some(payload),
            completion: waiting,
        }) {
            release(submission.completion, Durability::Failed, 0, None);
        }
    }

    fn on_frames(&mut self, slot: usize, generation: u64, frames: Vec<bytes::Bytes>) {
        if self
            .links
            .get(slot)
            .is_none_or(|l| l.generation != generation)
        {
            return;
        }
        for frame in frames {
            let Some(answer) = message::decode_owned(self.dialect, &frame) else {
                tracing::warn!(
                    issuer = self.name(),
                    slot,
                    bytes = frame.len(),
                    "malformed message from the issuer"
                );
                metrics().issuer_event(self.name(), "malformed");
                self.garbage(slot);
                continue;
            };
            if let Some(link) = self.links.get_mut(slot) {
                link.last_traffic = Instant::now();
            }
            // An issuer's own network management (sign-on, echo) gets its answer.
            if answer.mti.0 == *b"0800" {
                let mut response = Message::new(Mti(*b"0810"));
                for field in [7, 11, 70] {
                    if let Some(v) = answer.get(field) {
                        response.set(field, v.to_vec());
                    }
                }
                response.set(39, b"00".to_vec());
                self.send_on(slot, &response);
                continue;
            }
            let stan = answer
                .get(11)
                .and_then(message::digits)
                .and_then(|s| u32::try_from(s).ok());
            let matched = stan.and_then(|stan| {
                let pending = self.pending.get(&stan)?;
                let echoed = pending.echoed.iter().all(|(field, value)| {
                    answer.get(*field).is_none_or(|got| got == value.as_slice())
                });
                // Field 41 must be there when it was sent: it is part of the match (DESIGN 3.2).
                let terminal = pending
                    .echoed
                    .iter()
                    .all(|(field, _)| *field != 41 || answer.has(41));
                (pending.response_mti == answer.mti && echoed && terminal).then_some(stan)
            });
            let Some(stan) = matched.and_then(|stan| self.remove_pending(stan).map(|p| (stan, p)))
            else {
                tracing::warn!(issuer = self.name(), slot, mti = %answer.mti, stan = ?stan, "answer from the issuer that matches no outstanding request (late, duplicate or unknown)");
                // Not counted toward closing the link: after a stall, late answers are expected,
                // and closing would only time out what is still outstanding on it.
                metrics().issuer_event(self.name(), "unmatched");
                continue;
            };
            let (stan, pending) = stan;
            if let Some(link) = self.links.get_mut(slot) {
                link.garbage = 0;
            }
            self.answered(stan, pending, &answer);
        }
        self.update_health();
    }

    fn garbage(&mut self, slot: usize) {
        let Some(link) = self.links.get_mut(slot) else {
            return;
        };
        link.garbage += 1;
        if link.garbage >= ISSUER_GARBAGE_MAX {
            tracing::warn!(
                issuer = self.settings.name,
                slot,
                "closing a link that keeps sending what matches nothing"
            );
            self.close(slot);
        }
    }

    fn close(&mut self, slot: usize) {
        if let Some(link) = self.links.get_mut(slot) {
            link.signed_on = false;
            link.checking = false;
            link.writer = None;
            if let Some(close) = link.close.take() {
                let _ = close.send(());
            }
        }
        self.update_health();
    }

    fn answered(&mut self, stan: u32, pending: Pending, answer: &Message<'_>) {
        match pending.purpose {
            Purpose::Request {
                transaction,
                sent_mti,
                sent_lsn,
                reversal,
                ..
            } => {
                metrics().issuer_event(self.name(), "answered");
                self.timeouts_in_row = 0;
                if self.half_open {
                    tracing::info!(
                        issuer = self.settings.name,
                        "the issuer answered: circuit breaker closed"
                    );
                }
                self.breaker_until = None;
                self.half_open = false;
                self.probe = None;
                let outcome = message::outcome_of(answer);
                if outcome.code.is_approved() {
                    self.remember(transaction.identity, sent_mti, stan);
                    if reversal.is_none() {
                        // Its reversal overtook this answer and is queued already.
                        self.originals.set_reversed(&transaction.identity);
                    }
                }
                self.log(
                    transaction,
                    outcome,
                    Some((sent_mti, stan)),
                    None,
                    None,
                    sent_lsn,
                );
            }
            Purpose::SignOn => {
                let Some(link) = self.links.get_mut(pending.slot) else {
                    return;
                };
                if link.generation != pending.generation {
                    return;
                }
                link.checking = false;
                if answer.get(39) == Some(b"00") {
                    link.signed_on = true;
                    tracing::info!(
                        issuer = self.settings.name,
                        slot = pending.slot,
                        "issuer link signed on"
                    );
                    metrics().issuer_event(self.name(), "link_up");
                } else {
                    tracing::warn!(issuer = self.settings.name, slot = pending.slot, code = ?answer.get(39).map(String::from_utf8_lossy), "sign-on refused by the issuer");
                    self.close(pending.slot);
                }
            }
            Purpose::Echo => {
                if let Some(link) = self.links.get_mut(pending.slot) {
                    link.checking = false;
                }
            }
            Purpose::Advice { id } => {
                self.advices_in_flight = self.advices_in_flight.saturating_sub(1);
                // Taken: 00; or an answer that says there is nothing (more) to do: original
                // not found (25), duplicate (94), invalid (12). Anything else (91, 96, ...)
                // means the issuer could not take it now: it is sent again.
                let taken = matches!(answer.get(39), Some(b"00" | b"25" | b"94" | b"12") | None);
                if taken {
                    self.finish_advice(id, true);
                } else {
                    tracing::warn!(
                        issuer = self.settings.name,
                        advice = %format_args!("{id:032x}"),
                        code = %String::from_utf8_lossy(answer.get(39).unwrap_or_default()),
                        "the issuer did not take a queued advice: it is sent again"
                    );
                    if let Some(queued) = self.queue.get_mut(&id) {
                        queued.in_flight = false;
                    }
                }
            }
        }
    }

    /// Ends a queued advice: acknowledged by the issuer, or given up. Its end is logged, and
    /// its record let go of once that is durable.
    fn finish_advice(&mut self, id: u128, delivered: bool) {
        let Some(queued) = self.queue.remove(&id) else {
            return;
        };
        metrics().issuer_event(
            self.name(),
            if delivered {
                "advice_acknowledged"
            } else {
                "advice_given_up"
            },
        );
        if !delivered {
            tracing::error!(
                issuer = self.settings.name,
                advice = %format_args!("{id:032x}"),
                attempts = queued.attempts,
                "advice given up after its attempts or its age: reconcile it with the issuer by hand"
            );
        }
        let pins = self.context.pins.clone();
        let lsn = queued.lsn;
        // Logged even without room in the queue: the reservation cannot be refused but by a
        // failed log, in which case the record stays pinned until the restart.
        if !self.context.wal.reserve_beyond_bound() {
            return;
        }
        self.submit(
            &Entry::AdviceDone {
                at_seconds: unix_seconds(),
                id,
                delivered,
            },
            Waiting::Remote {
                reply: None,
                then: Some(AfterLogged(Box::new(move |durability, _| {
                    if durability == Durability::Durable {
                        pins.unpin(lsn);
                    }
                }))),
            },
        );
    }

    /// Answers what has waited past its deadline.
    fn expire(&mut self) {
        let now = Instant::now();
        while let Some(&(deadline, stan, serial)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            let current = self.pending.get(&stan).is_some_and(|p| p.serial == serial);
            if !current {
                continue;
            }
            let Some(pending) = self.remove_pending(stan) else {
                continue;
            };
            match pending.purpose {
                Purpose::Request {
                    transaction,
                    sent_mti,
                    outgoing,
                    sent_lsn,
                    reversal,
                } => {
                    if outgoing.is_some() {
                        self.close_unsent(transaction, sent_mti, stan, sent_lsn);
                    } else {
                        self.timed_out(transaction, sent_mti, stan, reversal, sent_lsn);
                    }
                }
                Purpose::SignOn | Purpose::Echo => {
                    let live = self
                        .links
                        .get(pending.slot)
                        .is_some_and(|l| l.generation == pending.generation);
                    if live {
                        tracing::warn!(
                            issuer = self.settings.name,
                            slot = pending.slot,
                            "no answer to a sign-on or echo: closing the link"
                        );
                        self.close(pending.slot);
                    }
                }
                Purpose::Advice { id } => {
                    self.advices_in_flight = self.advices_in_flight.saturating_sub(1);
                    if let Some(queued) = self.queue.get_mut(&id) {
                        queued.in_flight = false;
                    }
                }
            }
        }
        if self.breaker_until.is_some_and(|until| now >= until) {
            self.breaker_until = None;
            self.half_open = true;
            self.probe = None;
            self.update_health();
        }
    }

    /// 91 for the acquirer, and a reversal of what the switch sent queued in the same record.
    fn timed_out(
        &mut self,
        transaction: Transaction,
        sent_mti: [u8; 4],
        stan: u32,
        reversal: Option<Advice>,
        sent_lsn: Option<u64>,
    ) {
        metrics().issuer_event(self.name(), "timeout");
        self.timeouts_in_row += 1;
        let probe_failed = self.half_open && self.probe == Some(stan);
        if probe_failed {
            self.half_open = false;
            self.probe = None;
        }
        if (probe_failed || self.timeouts_in_row >= self.settings.breaker_failures)
            && self.breaker_until.is_none()
        {
            tracing::warn!(issuer = self.settings.name, timeouts = self.timeouts_in_row, open_for = ?self.settings.breaker_open, "circuit breaker open: the issuer is treated as down");
            metrics().issuer_event(self.name(), "breaker_open");
            self.breaker_until = Some(Instant::now() + self.settings.breaker_open);
            self.update_health();
        }
        // Stand-in where configured: the switch approves within its rules, reverses what it
        // sent, and advises the issuer of its approval (0120), all in one record.
        // Not when an acquirer's reversal of it came first: the acquirer wants none of it.
        if reversal.is_some() && self.stand_in_allows(&transaction.request) {
            let frame = transaction.frame.clone();
            let advice = self
                .context
                .acquirer_dialect
                .decode(&frame)
                .ok()
                .and_then(|request| self.stand_in_advice(&request));
            if let Some((auth_id, advice_mti, advice_stan, advice)) = advice {
                metrics().issuer_event(self.name(), "stand_in");
                tracing::info!(
                    issuer = self.settings.name,
                    stan = transaction.identity.stan,
                    issuer_stan = stan,
                    "no answer from the issuer in time: approved in stand-in, reversal and advice queued"
                );
                let mut transaction = transaction;
                if let Some(via) = &mut transaction.via {
                    via.how = "stand-in";
                }
                self.remember(transaction.identity, advice_mti, advice_stan);
                let advices = reversal
                    .into_iter()
                    .chain(std::iter::once(advice))
                    .collect();
                return self.log_advices(
                    transaction,
                    Outcome {
                        code: ResponseCode::Approved,
                        auth_id: Some(auth_id),
                        balances: None,
                    },
                    Some((advice_mti, advice_stan)),
                    advices,
                    None,
                    sent_lsn,
                );
            }
        }
        tracing::info!(
            issuer = self.settings.name,
            stan = transaction.identity.stan,
            issuer_stan = stan,
            "no answer from the issuer in time: 91, reversal queued"
        );
        self.log(
            transaction,
            Outcome::decline(ResponseCode::IssuerUnavailable),
            Some((sent_mti, stan)),
            reversal,
            None,
            sent_lsn,
        );
    }

    /// Sends what is due: queued advices, echoes on idle links.
    fn housekeeping(&mut self) {
        let now = Instant::now();
        let idle = self.settings.echo_idle;
        for slot in 0..self.links.len() {
            let link = &self.links[slot];
            if link.signed_on && !link.checking && now.duration_since(link.last_traffic) >= idle {
                let stan = self.take_stan();
                let echo = network_message(b"301", stan);
                if self.send_on(slot, &echo) {
                    self.links[slot].checking = true;
                    self.track(stan, slot, &echo, Purpose::Echo);
                }
            }
        }
        self.ticks = self.ticks.wrapping_add(1);
        if !self.available(now) && self.ticks.is_multiple_of(100) {
            // Down for long: what is past its age is given up all the same (every 10 s).
            let expiry = self.settings.advice_expiry.as_secs();
            let today = unix_seconds();
            let old: Vec<u128> = self
                .queue
                .iter()
                .filter(|(_, q)| {
                    !q.in_flight && today.saturating_sub(q.advice.created_seconds) >= expiry
                })
                .map(|(id, _)| *id)
                .collect();
            for id in old {
                self.finish_advice(id, false);
            }
        }
        if self.available(now) {
            let due: Vec<u128> = self
                .queue
                .iter()
                .filter(|(_, q)| !q.in_flight && q.next_try <= now)
                .map(|(id, _)| *id)
                .take(ADVICES_IN_FLIGHT_MAX.saturating_sub(self.advices_in_flight))
                .collect();
            for id in due {
                self.send_advice(id, now);
            }
        }
        self.update_health();
    }

    fn send_advice(&mut self, id: u128, now: Instant) {
        let Some(queued) = self.queue.get(&id) else {
            return;
        };
        let age = unix_seconds().saturating_sub(queued.advice.created_seconds);
        if queued.attempts >= self.settings.attempts_max
            || age >= self.settings.advice_expiry.as_secs()
        {
            return self.finish_advice(id, false);
        }
        let Some(advice) = self
            .context
            .sealer
            .open(id, &queued.advice.sealed)
            .and_then(|bytes| message::decode_owned(self.dialect, &bytes))
        else {
            tracing::error!(issuer = self.settings.name, advice = %format_args!("{id:032x}"), "a queued advice cannot be opened (ledger.token_key changed?)");
            return self.finish_advice(id, false);
        };
        let repeat = queued.sent_before;
        // Its own field 11, the same on every send; while something else outstanding has it
        // (the counter came round), it waits.
        let stan = match advice
            .get(11)
            .and_then(message::digits)
            .and_then(|s| u32::try_from(s).ok())
        {
            Some(stan) if self.pending.contains_key(&stan) => return,
            Some(stan) => stan,
            None => self.take_stan(),
        };
        let Some(slot) = self.pick_link() else {
            return;
        };
        let out = message::advice_to_send(&advice, repeat, stan);
        if !self.send_on(slot, &out) {
            return;
        }
        metrics().issuer_event(self.name(), "advice_sent");
        let (retry_min, retry_max) = (self.settings.retry_min, self.settings.retry_max);
        if let Some(queued) = self.queue.get_mut(&id) {
            queued.attempts += 1;
            queued.sent_before = true;
            queued.in_flight = true;
            let factor = 1u32 << queued.attempts.min(16);
            queued.next_try = now + retry_min.saturating_mul(factor).min(retry_max);
        }
        self.advices_in_flight += 1;
        self.track(stan, slot, &out, Purpose::Advice { id });
    }
}

/// An 0800 with field 70 `code` (001 sign-on, 301 echo).
fn network_message(code: &[u8; 3], stan: u32) -> Message<'static> {
    let mut m = Message::new(Mti(*b"0800"));
    m.set(7, transmission_now().into_bytes());
    m.set(11, message::stan_field(stan));
    m.set(70, code.to_vec());
    m
}

/// Field 7 for now, MMDDhhmmss in UTC.
fn transmission_now() -> String {
    let seconds = unix_seconds();
    let (_, month, day) = crate::acquirer::iso::civil_date(seconds / 86_400);
    let in_day = seconds % 86_400;
    format!(
        "{month:02}{day:02}{:02}{:02}{:02}",
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60
    )
}

/// The authorization code of a stand-in approval: `S` and five digits of the advice id.
fn stand_in_code(id: u128) -> [u8; 6] {
    let mut code = *b"S00000";
    let digits = format!("{:05}", id % 100_000);
    code[1..].copy_from_slice(digits.as_bytes());
    code
}

impl Actor for IssuerChannel {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let me = ctx.address();
        self.me = Some(me.clone());
        let now = Instant::now();
        for slot in 0..self.settings.connections {
            self.links.push(Link {
                generation: 0,
                writer: None,
                close: None,
                signed_on: false,
                checking: false,
                last_traffic: now,
                garbage: 0,
            });
            actix::spawn(link::run(
                slot,
                self.settings.clone(),
                self.context.tls.clone(),
                me.clone().recipient(),
                self.stop.subscribe(),
            ));
        }
        for settled in std::mem::take(&mut self.settled) {
            self.close_settled(settled);
        }
        ctx.run_interval(TIMEOUT_TICK, |channel, _| channel.expire());
        ctx.run_interval(HOUSEKEEPING_TICK, |channel, _| channel.housekeeping());
        self.update_health();
        tracing::info!(
            issuer = self.settings.name,
            address = %self.settings.address,
            connections = self.settings.connections,
            queued = self.queue.len(),
            "issuer channel started"
        );
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        let _ = self.stop.send(true);
    }
}

impl Handler<Forward> for IssuerChannel {
    type Result = ();
    fn handle(&mut self, Forward(mut transaction, others): Forward, _: &mut Self::Context) {
        // From here on it may be decided (an issuer asked): see `Transaction::guard`.
        transaction.guard.disarm();
        self.forward(transaction, others);
    }
}

/// This channel's part of a snapshot: the approvals reversals and completions may still name.
impl Handler<TakeSnapshot> for IssuerChannel {
    type Result = ();
    fn handle(&mut self, message: TakeSnapshot, _: &mut Self::Context) {
        // The chunks, shared: no copy on this thread (DESIGN: no stall from maintenance).
        let originals = self.originals.take();
        let _ = self.context.wal.submit_marker(Waiting::RemoteSnapshot {
            generation: message.generation,
            issuer: self.settings.name.clone(),
            originals,
        });
    }
}

impl Handler<Logged> for IssuerChannel {
    type Result = ();
    fn handle(&mut self, Logged { stan, serial, lsn }: Logged, _: &mut Self::Context) {
        self.logged(stan, serial, lsn);
    }
}

impl Handler<Enqueue> for IssuerChannel {
    type Result = ();
    fn handle(&mut self, Enqueue { advice, lsn }: Enqueue, _: &mut Self::Context) {
        let id = advice.id;
        if self.queue.contains_key(&id) {
            // Queued already (by an earlier record): this record is not needed for it.
            self.context.pins.unpin(lsn);
            return;
        }
        self.queue.insert(
            id,
            Queued {
                advice,
                lsn,
                attempts: 0,
                next_try: Instant::now(),
                sent_before: false,
                in_flight: false,
            },
        );
        let now = Instant::now();
        if self.available(now) && self.advices_in_flight < ADVICES_IN_FLIGHT_MAX {
            self.send_advice(id, now);
        }
    }
}

impl Handler<LinkEvent> for IssuerChannel {
    type Result = ();
    fn handle(&mut self, event: LinkEvent, _: &mut Self::Context) {
        match event {
            LinkEvent::Up {
                slot,
                generation,
                writer,
                close,
            } => {
                let Some(link) = self.links.get_mut(slot) else {
                    return;
                };
                link.generation = generation;
                link.writer = Some(writer);
                link.close = Some(close);
                link.signed_on = false;
                link.checking = true;
                link.garbage = 0;
                let stan = self.take_stan();
                let sign_on = network_message(b"001", stan);
                if self.send_on(slot, &sign_on) {
                    self.track(stan, slot, &sign_on, Purpose::SignOn);
                }
            }
            LinkEvent::Frames {
                slot,
                generation,
                frames,
            } => self.on_frames(slot, generation, frames),
            LinkEvent::Down {
                slot,
                generation,
                reason,
            } => {
                let Some(link) = self.links.get_mut(slot) else {
                    return;
                };
                if link.generation > generation {
                    return;
                }
                let was_up = link.signed_on;
                link.generation = generation;
                link.writer = None;
                link.close = None;
                link.signed_on = false;
                link.checking = false;
                if was_up {
                    tracing::warn!(
                        issuer = self.settings.name,
                        slot,
                        reason,
                        "issuer link down; reconnecting"
                    );
                    metrics().issuer_event(self.name(), "link_down");
                } else {
                    tracing::debug!(
                        issuer = self.settings.name,
                        slot,
                        reason,
                        "issuer link not up; retrying"
                    );
                }
                self.update_health();
            }
        }
    }
}

/// What an issuer channel looks like to operators (admin API).
#[derive(Debug, Message)]
#[rtype(result = "ChannelStatus")]
pub struct Status;

#[derive(Debug, Clone, serde::Serialize)]
pub struct ChannelStatus {
    pub name: String,
    pub health: &'static str,
    pub links_signed_on: usize,
    pub links: usize,
    pub outstanding: usize,
    pub queued: usize,
    pub breaker_open: bool,
}

impl Handler<Status> for IssuerChannel {
    type Result = MessageResult<Status>;
    fn handle(&mut self, _: Status, _: &mut Self::Context) -> Self::Result {
        MessageResult(ChannelStatus {
            name: self.settings.name.clone(),
            health: self.context.health.get().as_str(),
            links_signed_on: self.links.iter().filter(|l| l.signed_on).count(),
            links: self.links.len(),
            outstanding: self.pending.len(),
            queued: self.queue.len(),
            breaker_open: self.breaker_open(Instant::now()),
        })
    }
}
