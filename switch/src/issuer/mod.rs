//! Issuer channels: the switch's links to issuers it does not own (DESIGN §3.2, §3.5).
//!
//! - [`channel`]: the channel actor, one per `[[issuers]]` entry: a pool of links, requests
//!   multiplexed on them under the switch's own field 11, timeouts, health and circuit
//!   breaker, stand-in, and the store-and-forward queue of reversals and advices.
//! - [`book`]: the remote approvals a channel remembers, shared with snapshots without a copy.
//! - [`link`]: one TCP connection's task: connect with backoff and jitter, frames in and out.
//! - [`message`]: what the switch sends an issuer, built from the acquirer's request, and
//!   how an issuer's answer is read; sealing queued messages for the log.
//! - [`orphans`]: what the log holds for issuers no longer configured, given up after a day.
//! - [`pins`]: the log records that queued advices still need, which pruning keeps.
//! - [`tls`]: TLS on issuer links, optionally mutual.

pub mod book;
pub mod channel;
pub mod link;
pub mod message;
pub mod orphans;
pub mod pins;
pub mod tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use adapters::{DialectName, FrameHeader};

use crate::domain::Minor;

/// One `[[issuers]]` entry, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerSettings {
    pub name: String,
    pub address: SocketAddr,
    pub dialect: DialectName,
    pub framing: FrameHeader,
    /// Links kept open at once.
    pub connections: usize,
    /// How long the switch waits for the issuer's answer before answering 91 and queueing a
    /// reversal.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Requests outstanding at the issuer at once, over all links; beyond, 91 at once.
    pub inflight_max: usize,
    /// A link with no traffic for this long is checked with an echo (0800/301).
    pub echo_idle: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Timeouts in a row that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker sends nothing before trying again.
    pub breaker_open: Duration,
    /// Queued advices (reversals, completions, stand-in advices) at most; beyond, requests
    /// to this issuer are answered 91 at once, since a timeout could not be reversed.
    pub queue_max: usize,
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// Sends of one queued advice before it is given up (logged as such).
    pub attempts_max: u32,
    /// Age after which a queued advice is given up.
    pub advice_expiry: Duration,
    pub stand_in: Option<StandIn>,
    /// Remote approvals remembered for reversals and completions (the oldest go first).
    pub originals_max: usize,
    /// `[issuers.tls]`: `None`, plain TCP.
    pub tls: Option<tls::IssuerTls>,
}

/// Stand-in processing: while the issuer is down, approve what these rules allow, record it,
/// and advise the issuer (0120) once it is back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StandIn {
    /// Largest amount approved, in minor units of `currency`.
    pub amount_max: Minor,
    pub currency: u16,
    /// Merchant categories (field 18) approved; empty: any.
    pub merchant_categories: Vec<u16>,
}

/// A channel's health, read by routing without a message.
#[derive(Debug, Default)]
pub struct Health(AtomicU8);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthState {
    /// Every link signed on.
    Up,
    /// Some links signed on.
    Degraded,
    /// No link signed on, or the circuit breaker open.
    Down,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Up => "up",
            HealthState::Degraded => "degraded",
            HealthState::Down => "down",
        }
    }
}

impl Health {
    pub fn get(&self) -> HealthState {
        match self.0.load(Ordering::Acquire) {
            1 => HealthState::Up,
            2 => HealthState::Degraded,
            _ => HealthState::Down,
        }
    }

    pub fn set(&self, state: HealthState) {
        let value = match state {
            HealthState::Up => 1,
            HealthState::Degraded => 2,
            HealthState::Down => 0,
        };
        self.0.store(value, Ordering::Release);
    }
}
