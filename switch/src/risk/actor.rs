//! The risk actor: owns the rules (and, later, their state) and screens each transaction
//! before routing. The decisions are the plain [`super::RiskEngine`]'s.

use actix::prelude::*;

use std::sync::Arc;
use std::time::Instant;

use super::RiskEngine;
use crate::clock::unix_millis;
use crate::domain::Outcome;
use crate::ops::metrics::{Stage, metrics};
use crate::pipeline::{Route, Screen, reply, shed};
use crate::routing::actor::RoutingActor;

#[derive(Debug)]
pub struct RiskActor {
    engine: Arc<RiskEngine>,
    routing: Addr<RoutingActor>,
    mailbox_capacity: usize,
    /// Requests screened, for publishing the evictions now and then.
    screened: u64,
}

impl RiskActor {
    pub fn new(
        engine: Arc<RiskEngine>,
        routing: Addr<RoutingActor>,
        mailbox_capacity: usize,
    ) -> RiskActor {
        RiskActor {
            engine,
            routing,
            mailbox_capacity,
            screened: 0,
        }
    }
}

impl Actor for RiskActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
    }
}

impl Handler<Screen> for RiskActor {
    type Result = ();
    fn handle(&mut self, Screen(mut transaction): Screen, _: &mut Self::Context) {
        let started = Instant::now();
        let verdict = self.engine.evaluate(&transaction.request, unix_millis());
        metrics().observe(Stage::Risk, started.elapsed());
        self.screened = self.screened.wrapping_add(1);
        if self.screened % 4096 == 1 {
            // Shared tables: every worker publishes the same total, now and then.
            let evictions = self.engine.velocity_evictions();
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
            }
            Err(decline) => {
                metrics().risk_decision("declined", &decline.rule);
                transaction.rule = Some(decline.rule);
                return reply(transaction, Outcome::decline(decline.code), false);
            }
        }
        if let Err(error) = self.routing.try_send(Route(transaction)) {
            let (SendError::Full(Route(transaction)) | SendError::Closed(Route(transaction))) =
                error;
            shed(transaction);
        }
    }
}

/// Replaces the rules (a configuration reload): requests already screened keep their
/// decision; every later one meets the new rules. Every worker gets the same engine, whose
/// velocity tables all of them share.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ReloadRules(pub Arc<RiskEngine>);

impl Handler<ReloadRules> for RiskActor {
    type Result = ();
    fn handle(&mut self, ReloadRules(engine): ReloadRules, _: &mut Self::Context) {
        self.engine = engine;
    }
}
