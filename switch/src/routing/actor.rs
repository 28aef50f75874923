//! The routing actor: sends each screened transaction to the ledger shard that owns its card,
//! or to the channel of its remote issuer.

use std::sync::Arc;

use actix::prelude::*;

use std::time::Instant;

use super::{Destination, RoutingTable};
use crate::domain::{Outcome, ResponseCode};
use crate::issuer::channel::{Forward, IssuerChannel};
use crate::issuer::{Health, HealthState};
use crate::ledger::actor::LedgerActor;
use crate::ledger::shard_of;
use crate::limits::POST_BATCH_MAX;
use crate::ops::metrics::{Route as RouteLabel, Stage, metrics};
use crate::pipeline::{Post, Route, Transaction, Via, reply, shed};

/// The issuer channels by name, with their health and their name as the log lines carry it.
pub type Channels =
    Arc<std::collections::HashMap<String, (Addr<IssuerChannel>, Arc<Health>, Arc<str>)>>;

#[derive(Debug)]
pub struct RoutingActor {
    table: Arc<RoutingTable>,
    shards: Arc<[Addr<LedgerActor>]>,
    channels: Channels,
    mailbox_capacity: usize,
    /// Per shard, the transactions routed to it in this turn of the worker's loop, sent at the
    /// end of the turn ([`Flush`]) or once `POST_BATCH_MAX` are waiting.
    pending: Vec<Vec<Transaction>>,
    /// A [`Flush`] is queued behind the routes already in the mailbox.
    flush_queued: bool,
}

impl RoutingActor {
    pub fn new(
        table: Arc<RoutingTable>,
        shards: Arc<[Addr<LedgerActor>]>,
        channels: Channels,
        mailbox_capacity: usize,
    ) -> RoutingActor {
        let pending = (0..shards.len()).map(|_| Vec::new()).collect();
        RoutingActor {
            table,
            shards,
            channels,
            mailbox_capacity,
            pending,
            flush_queued: false,
        }
    }

    /// Hands shard `index` what waits for it: one message; sheds the lot if its mailbox is full.
    fn post(&mut self, index: usize) {
        let batch = std::mem::take(&mut self.pending[index]);
        if batch.is_empty() {
            return;
        }
        if let Err(error) = self.shards[index].try_send(Post(batch)) {
            let (SendError::Full(Post(batch)) | SendError::Closed(Post(batch))) = error;
            batch.into_iter().for_each(shed);
        }
    }
}

/// Sends every shard what was routed to it: queued behind the routes of one turn, so that the
/// transactions read in that turn reach each shard in one message.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Flush;

impl Handler<Flush> for RoutingActor {
    type Result = ();
    fn handle(&mut self, _: Flush, _: &mut Self::Context) {
        self.flush_queued = false;
        for index in 0..self.pending.len() {
            self.post(index);
        }
    }
}

impl Actor for RoutingActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
    }
}

impl Handler<Route> for RoutingActor {
    type Result = ();
    fn handle(&mut self, Route(mut transaction): Route, ctx: &mut Self::Context) {
        let started = Instant::now();
        let destination = self.table.route_with_fallbacks(&transaction.request.pan);
        metrics().observe(Stage::Routing, started.elapsed());
        match destination {
            Some((Destination::OnUs, _)) => {
                transaction.route = RouteLabel::OnUs;
                let index = shard_of(&transaction.request.card, self.shards.len());
                self.pending[index].push(transaction);
                if self.pending[index].len() >= POST_BATCH_MAX {
                    self.post(index);
                } else if !self.flush_queued {
                    self.flush_queued = true;
                    ctx.address().do_send(Flush);
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
}

/// Replaces the routing table (a configuration reload).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ReloadRoutes(pub Arc<RoutingTable>);

impl Handler<ReloadRoutes> for RoutingActor {
    type Result = ();
    fn handle(&mut self, ReloadRoutes(table): ReloadRoutes, _: &mut Self::Context) {
        self.table = table;
    }
}
