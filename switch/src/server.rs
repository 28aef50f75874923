//! Starting and stopping the switch: ledger shards, worker pipelines, the acquirer listener.
//!
//! Threads: one arbiter per ledger shard (the single owner of its accounts), and one worker
//! arbiter per core running risk, routing and the sessions assigned to it, so a request's hops
//! before the ledger stay on one thread. The main arbiter only accepts connections.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use anyhow::Context as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::actors::{LedgerActor, RiskActor, RoutingActor, ShardTotal, shard_of};
use crate::config::Settings;
use std::collections::HashMap;

use crate::config::AccountOverride;
use crate::domain::ledger::{Account, LedgerShard};
use crate::domain::{CardToken, Tokenizer};
use crate::http::Health;
use crate::idempotency::IdempotencyStore;
use crate::risk::RiskEngine;
use crate::session::{self, SessionContext};

/// How often answered idempotency entries past their retention are dropped.
const IDEMPOTENCY_SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The accounts each shard starts with, keyed by card token.
fn initial_accounts(
    settings: &Settings,
    tokenizer: &Tokenizer,
) -> anyhow::Result<Vec<Vec<(CardToken, Account)>>> {
    let mut shards: Vec<Vec<(CardToken, Account)>> = vec![Vec::new(); settings.shards];
    let Some(demo) = &settings.demo else {
        return Ok(shards);
    };
    let per_shard = usize::try_from(demo.count).unwrap_or(0) / settings.shards + 1;
    for shard in &mut shards {
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
                account.ledger = i64::try_from(b).context("demo override balance is too large")?;
            }
            account.blocked = o.blocked;
            account.limit_per_transaction = o.limit_per_transaction;
        }
        let card = tokenizer.token(&pan);
        shards[shard_of(&card, settings.shards)].push((card, account));
    }
    Ok(shards)
}

/// The running switch's threads, to stop them at the end.
#[derive(Debug)]
struct Threads {
    arbiters: Vec<Arbiter>,
}

impl Threads {
    fn stop(self) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
        for arbiter in self.arbiters {
            let _ = arbiter.join();
        }
    }
}

/// Runs the switch until `stop` resolves, then drains and returns. Must run inside an actix
/// `System`.
pub async fn serve(settings: Settings, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(settings.acquirer_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen for acquirers on {} (listeners.acquirer)",
                settings.acquirer_listen
            )
        })?;
    let acquirer_addr = listener
        .local_addr()
        .context("listener has no local address")?;
    let health = Arc::new(Health::default());
    let (http, http_addr) = crate::http::start(settings.http_listen, health.clone())?;
    tracing::info!("HTTP (healthz, readyz) on {http_addr}");

    let started = std::time::Instant::now();
    let tokenizer = Tokenizer::new(settings.token_key);
    let accounts = initial_accounts(&settings, &tokenizer)?;
    let account_count: usize = accounts.iter().map(Vec::len).sum();
    let mut threads = Threads {
        arbiters: Vec::new(),
    };
    let mut shards = Vec::with_capacity(settings.shards);
    for (index, accounts) in accounts.into_iter().enumerate() {
        let arbiter = Arbiter::new();
        let limits = settings.shard_limits;
        let capacity = settings.limits.mailbox_capacity;
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        shards.push(LedgerActor::start_in_arbiter(
            &arbiter.handle(),
            move |_| {
                let mut shard = LedgerShard::new(index, limits);
                shard.reserve_accounts(accounts.len());
                for (card, account) in accounts {
                    shard.open_account(card, account);
                }
                LedgerActor::new(shard, capacity)
            },
        ));
        threads.arbiters.push(arbiter);
    }
    let shards: Arc<[Addr<LedgerActor>]> = shards.into();
    let mut total: i128 = 0;
    for shard in shards.iter() {
        total += shard
            .send(ShardTotal)
            .await
            .context("a ledger shard stopped while starting")?;
    }
    tracing::info!(
        accounts = account_count,
        shards = settings.shards,
        total_minor = %total,
        elapsed = ?started.elapsed(),
        "ledger ready"
    );

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let idempotency = Arc::new(IdempotencyStore::new(
        settings.limits.idempotency_entries_max,
        settings.limits.idempotency_retention_seconds,
    ));
    let routes = Arc::new(settings.routes.clone());
    let acquirers = Arc::new(settings.acquirers.clone());
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut pipelines = Vec::with_capacity(workers);
    for _ in 0..workers {
        let arbiter = Arbiter::new();
        let capacity = settings.limits.mailbox_capacity;
        let (routes, shards_for_worker) = (routes.clone(), shards.clone());
        let routing = RoutingActor::start_in_arbiter(&arbiter.handle(), move |_| {
            RoutingActor::new(routes, shards_for_worker, capacity)
        });
        let engine = RiskEngine::new(settings.risk.clone());
        let risk = RiskActor::start_in_arbiter(&arbiter.handle(), move |_| {
            RiskActor::new(engine, routing, capacity)
        });
        let context = SessionContext {
            dialect: settings.dialect.dialect(),
            framing: settings.framing,
            max_frame_bytes: settings.max_frame_bytes,
            limits: settings.limits,
            acquirers: acquirers.clone(),
            idempotency: idempotency.clone(),
            tokenizer: tokenizer.clone(),
            risk,
            shutdown: shutdown_rx.clone(),
        };
        pipelines.push((arbiter.handle(), context));
        threads.arbiters.push(arbiter);
    }

    let sweeper = {
        let idempotency = idempotency.clone();
        actix::spawn(async move {
            let mut tick = tokio::time::interval(IDEMPOTENCY_SWEEP_INTERVAL);
            loop {
                tick.tick().await;
                idempotency.sweep(crate::actors::unix_seconds());
            }
        })
    };

    health.set_ready(true);
    tracing::info!(
        dialect = %settings.dialect,
        framing = %settings.framing,
        config = %settings.source,
        "listening for acquirers on {acquirer_addr}"
    );
    let connections = Arc::new(Semaphore::new(settings.limits.connections_max));
    let mut next_worker = 0usize;
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Ok(slot) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = settings.limits.connections_max, "connection refused: limits.connections_max reached");
            continue;
        };
        let (handle, context) = &pipelines[next_worker % pipelines.len()];
        next_worker = next_worker.wrapping_add(1);
        if let Err(error) = hand_over(stream, peer, handle, context.clone(), slot) {
            tracing::warn!(%peer, %error, "could not hand the connection to a worker");
        }
    }

    tracing::info!("shutting down: no new connections; draining in-flight requests");
    health.set_ready(false);
    drop(listener);
    let _ = shutdown_tx.send(true);
    let drain = Duration::from_secs(settings.limits.shutdown_drain_seconds + 1);
    let all = u32::try_from(settings.limits.connections_max).unwrap_or(u32::MAX);
    if tokio::time::timeout(drain, connections.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("some connections did not close within limits.shutdown_drain_seconds");
    }
    let mut total_after: i128 = 0;
    for shard in shards.iter() {
        total_after += shard.send(ShardTotal).await.unwrap_or(0);
    }
    sweeper.abort();
    http.stop(true).await;
    drop(pipelines);
    drop(shards);
    // Joining arbiter threads blocks: do it off the async runtime.
    let _ = tokio::task::spawn_blocking(move || threads.stop()).await;
    tracing::info!(total_minor = %total_after, conserved = total_after == total, "shutdown complete");
    Ok(())
}

/// Moves an accepted socket onto a worker arbiter and starts its session there.
fn hand_over(
    stream: TcpStream,
    peer: SocketAddr,
    worker: &ArbiterHandle,
    context: SessionContext,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> std::io::Result<()> {
    // A tokio socket belongs to the runtime that registered it; each arbiter has its own.
    let stream = stream.into_std()?;
    let spawned = worker.spawn(async move {
        let _slot = slot;
        match TcpStream::from_std(stream) {
            Ok(stream) => session::run(stream, peer, context).await,
            Err(error) => tracing::warn!(%peer, %error, "could not register the connection"),
        }
    });
    if spawned {
        Ok(())
    } else {
        Err(std::io::Error::other("worker arbiter has stopped"))
    }
}
