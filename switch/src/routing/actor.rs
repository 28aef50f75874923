//! The routing actor: sends each screened transaction to the ledger shard that owns its card,
//! or to the channel of its remote issuer.

use std::sync::Arc;

use actix::prelude::*;

use std::time::Instant;

use super::{Destination, RoutingTable};
use crate::domain::{Outcome, ResponseCode};
use crate::issuer::channel::{Forward, IssuerChannel};
use crate::ledger::actor::LedgerActor;
use crate::ledger::shard_of;
use crate::ops::metrics::{Route as RouteLabel, Stage, metrics};
use crate::pipeline::{Post, Route, reply, shed};

/// The issuer channels by name.
pub type Channels = Arc<std::collections::HashMap<String, Addr<IssuerChannel>>>;

#[derive(Debug)]
pub struct RoutingActor {
    table: Arc<RoutingTable>,
    shards: Arc<[Addr<LedgerActor>]>,
    channels: Channels,
    mailbox_capacity: usize,
}

impl RoutingActor {
    pub fn new(
        table: Arc<RoutingTable>,
        shards: Arc<[Addr<LedgerActor>]>,
        channels: Channels,
        mailbox_capacity: usize,
    ) -> RoutingActor {
        RoutingActor {
            table,
            shards,
            channels,
            mailbox_capacity,
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
    fn handle(&mut self, Route(mut transaction): Route, _: &mut Self::Context) {
        let started = Instant::now();
        let destination = self.table.route(&transaction.request.pan);
        metrics().observe(Stage::Routing, started.elapsed());
        match destination {
            Some(Destination::OnUs) => {
                transaction.route = RouteLabel::OnUs;
                let shard = &self.shards[shard_of(&transaction.request.card, self.shards.len())];
                if let Err(error) = shard.try_send(Post(transaction)) {
                    let (SendError::Full(Post(transaction)) | SendError::Closed(Post(transaction))) =
                        error;
                    shed(transaction);
                }
            }
            Some(Destination::Issuer(name)) => {
                transaction.route = RouteLabel::Issuer;
                match self.channels.get(name) {
                    Some(channel) => {
                        if let Err(error) = channel.try_send(Forward(transaction)) {
                            let (SendError::Full(Forward(transaction))
                            | SendError::Closed(Forward(transaction))) = error;
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
