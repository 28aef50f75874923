//! Risk and routing as plain calls on the worker that read the request (no mailbox hop for
//! either: they own no state that needs an actor), and the hand-over of on-us transactions to
//! their ledger shards: one message per shard per turn of the worker's loop.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use actix::prelude::*;

use super::{Destination, RoutingTable};
use crate::clock::unix_millis;
use crate::domain::{Outcome, ResponseCode};
use crate::issuer::channel::{Forward, IssuerChannel};
use crate::issuer::{Health, HealthState};
use crate::ledger::actor::LedgerActor;
use crate::ledger::shard_of;
use crate::limits::POST_BATCH_MAX;
use crate::ops::metrics::{Route as RouteLabel, Stage, metrics};
use crate::pipeline::{Post, Transaction, Via, reply, shed};
use crate::risk::RiskEngine;

/// The issuer channels by name, with their health and their name as the log lines carry it.
pub type Channels =
    Arc<std::collections::HashMap<String, (Addr<IssuerChannel>, Arc<Health>, Arc<str>)>>;

/// What a configuration reload replaces (the risk rules, the routing table): requests already
/// past it keep what they met; every later one meets the new one.
#[derive(Debug)]
pub struct Current<T>(RwLock<Arc<T>>);

impl<T> Current<T> {
    pub fn new(value: Arc<T>) -> Current<T> {
        Current(RwLock::new(value))
    }

    pub fn get(&self) -> Arc<T> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set(&self, value: Arc<T>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = value;
    }
}

/// One worker's risk screening, routing and hand-over to the shards. Shared by the sessions
/// of that worker (all on its thread: the lock on what waits is never contended).
#[derive(Debug)]
pub struct Dispatcher {
    rules: Arc<Current<RiskEngine>>,
    routes: Arc<Current<RoutingTable>>,
    shards: Arc<[Addr<LedgerActor>]>,
    /// Per shard, the requests routed to it (by every worker) and not yet taken up by it:
    /// beyond `queued_max` (`limits.mailbox_capacity`) a request is shed at once (91), as a
    /// full mailbox did when each request was its own message.
    queued: Arc<[AtomicUsize]>,
    queued_max: usize,
    channels: Channels,
    /// Per shard, the transactions routed to it in this turn of the worker's loop: sent when
    /// the turn ends (a task spawned behind the ready ones) or once `POST_BATCH_MAX` wait.
    pending: Mutex<Vec<Vec<Transaction>>>,
    flush_queued: AtomicBool,
    /// Requests screened, for publishing the velocity evictions now and then.
    screened: AtomicU64,
}

impl Dispatcher {
    pub fn new(
        rules: Arc<Current<RiskEngine>>,
        routes: Arc<Current<RoutingTable>>,
        shards: Arc<[Addr<LedgerActor>]>,
        queued: Arc<[AtomicUsize]>,
        queued_max: usize,
        channels: Channels,
    ) -> Dispatcher {
        let pending = Mutex::new((0..shards.len()).map(|_| Vec::new()).collect());
        Dispatcher {
            rules,
            routes,
            shards,
            queued,
            queued_max,
            channels,
            pending,
            flush_queued: AtomicBool::new(false),
            screened: AtomicU64::new(0),
        }
    }

    /// Screens `transaction` and sends it where it goes, or answers it (a risk decline, no
    /// route). Must run on the worker's arbiter: the end of the turn is a task spawned there.
    pub fn dispatch(self: &Arc<Self>, transaction: Transaction) {
        if let Some(transaction) = self.screen(transaction) {
            self.route(transaction);
        }
    }

    /// The risk rules: `None` when they declined it (answered here).
    fn screen(&self, mut transaction: Transaction) -> Option<Transaction> {
        let started = Instant::now();
        let engine = self.rules.get();
        let verdict = engine.evaluate(&transaction.request, unix_millis());
        metrics().observe(Stage::Risk, started.elapsed());
        if self
            .screened
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(4096)
        {
            // Shared tables: every worker publishes the same total, now and then.
            let evictions = engine.velocity_evictions();
            metrics()
                .velocity_evictions
                .set(i64::try_from(evictions).unwrap_or(i64::MAX));
        }
        match verdict {
            Ok(mut passed) => {
                if let Some(flag) = passed.flag.take() {
                    metrics().risk_decision("flagged", &flag);
                    transaction.flag = Some(flag);
                }
                transaction.velocity = passed;
                Some(transaction)
            }
            Err(decline) => {
                metrics().risk_decision("declined", &decline.rule);
                transaction.rule = Some(decline.rule);
                reply(transaction, Outcome::decline(decline.code), false);
                None
            }
        }
    }

    /// To the ledger shard that owns its card, or to the channel of its remote issuer.
    fn route(self: &Arc<Self>, mut transaction: Transaction) {
        let started = Instant::now();
        let table = self.routes.get();
        let destination = table.route_with_fallbacks(&transaction.request.pan);
        metrics().observe(Stage::Routing, started.elapsed());
        match destination {
            Some((Destination::OnUs, _)) => {
                transaction.route = RouteLabel::OnUs;
                let index = shard_of(&transaction.request.card, self.shards.len());
                let Some(queued) = self.queued.get(index) else {
                    return shed(transaction);
                };
                if queued.fetch_add(1, Ordering::AcqRel) >= self.queued_max {
                    queued.fetch_sub(1, Ordering::AcqRel);
                    return shed(transaction);
                }
                let full = {
                    let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                    pending[index].push(transaction);
                    (pending[index].len() >= POST_BATCH_MAX)
                        .then(|| std::mem::take(&mut pending[index]))
                };
                match full {
                    Some(batch) => self.post(index, batch),
                    None => {
                        if !self.flush_queued.swap(true, Ordering::AcqRel) {
                            let this = self.clone();
                            actix::spawn(async move { this.flush() });
                        }
                    }
                }
            }
            Some((Destination::Issuer(primary), fallbacks)) => {
                transaction.route = RouteLabel::Issuer;
                // A reversal or completion goes where its original went: to each issuer of
                // the route in turn, until one knows it. Anything else goes to the first issuer
                // not down, in order; if all are, to the primary (stand-in or 91 there).
                let candidates = std::iter::once(primary).chain(fallbacks);
                let (chosen, others) = if transaction.request.kind.refers_to_original() {
                    let others: Vec<Addr<IssuerChannel>> = fallbacks
                        .iter()
                        .filter_map(|name| self.channels.get(name).map(|(c, ..)| c.clone()))
                        .collect();
                    (primary, others)
                } else {
                    let up = |name: &&String| {
                        self.channels
                            .get(*name)
                            .is_some_and(|(_, health, _)| health.get() != HealthState::Down)
                    };
                    let chosen = candidates.clone().find(up).unwrap_or(primary);
                    if chosen != primary {
                        metrics().issuer_event(chosen, "fallback");
                    }
                    (chosen, Vec::new())
                };
                match self.channels.get(chosen) {
                    Some((channel, _, name)) => {
                        transaction.via = Some(Via {
                            issuer: name.clone(),
                            how: if chosen == primary {
                                "primary"
                            } else {
                                "fallback"
                            },
                        });
                        if let Err(error) = channel.try_send(Forward(transaction, others)) {
                            let (SendError::Full(Forward(transaction, _))
                            | SendError::Closed(Forward(transaction, _))) = error;
                            shed(transaction);
                        }
                    }
                    None => shed(transaction),
                }
            }
            None => reply(
                transaction,
                Outcome::decline(ResponseCode::NoSuchIssuer),
                false,
            ),
        }
    }

    /// Sends every shard what waits for it: the end of a turn.
    fn flush(&self) {
        self.flush_queued.store(false, Ordering::Release);
        for index in 0..self.shards.len() {
            // Taken under the lock, posted outside it (a shed answers on this thread).
            let batch = {
                let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                std::mem::take(&mut pending[index])
            };
            if !batch.is_empty() {
                self.post(index, batch);
            }
        }
    }

    /// Hands shard `index` one batch; sheds the lot (91) if its mailbox is full.
    fn post(&self, index: usize, batch: Vec<Transaction>) {
        if let Err(error) = self.shards[index].try_send(Post(batch)) {
            let (SendError::Full(Post(batch)) | SendError::Closed(Post(batch))) = error;
            if let Some(queued) = self.queued.get(index) {
                queued.fetch_sub(batch.len(), Ordering::AcqRel);
            }
            batch.into_iter().for_each(shed);
        }
    }
}
