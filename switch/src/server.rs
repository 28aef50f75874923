//! Starting and stopping the switch: recovery, the WAL writer, ledger shards, worker pipelines,
//! the acquirer listener.
//!
//! Threads: one arbiter per ledger shard (the single owner of its accounts); one worker arbiter
//! per core running risk, routing and the sessions assigned to it, so a request's hops before
//! the ledger stay on one thread; the WAL writer's own thread; the main arbiter accepts.
//!
//! Start-up order: listeners bound (a port in use fails fast), WAL directory locked, genesis
//! plus log replayed, writer started after the log's tail, shards started with the recovered
//! state, and only then acquirers accepted and `/readyz` ready.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use anyhow::{Context as _, anyhow};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::actors::{
    LedgerActor, RiskActor, RoutingActor, ShardTotal, TakeSnapshot, release, unix_seconds,
};
use crate::config::Settings;
use crate::domain::Tokenizer;
use crate::http::Health;
use crate::idempotency::{IdempotencyStore, Sweep};
use crate::recovery;
use crate::risk::RiskEngine;
use crate::session::{self, SessionContext};
use crate::snapshotter;
use crate::wal::writer::{self, Disk, SyncMode};

/// How often the idempotency table may drop its older generation.
const IDEMPOTENCY_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

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

/// Runs the switch until `stop` resolves (or the WAL fails), then drains and returns. Must run
/// inside an actix `System`. An error return means the process should exit non-zero.
pub async fn serve(settings: Settings, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    // Bound now, so that a port in use fails the start at once; listening (accepting
    // connections) only once recovery is done and the switch can answer, so that acquirers do
    // not connect and hang during a long replay but fail over.
    let socket = bind_acquirer_socket(settings.acquirer_listen).with_context(|| {
        format!(
            "cannot listen for acquirers on {} (listeners.acquirer)",
            settings.acquirer_listen
        )
    })?;
    let acquirer_addr = socket
        .local_addr()
        .context("listener has no local address")?;
    let health = Arc::new(Health::default());
    let (http, http_addr) = crate::http::start(settings.http_listen, health.clone())?;
    tracing::info!("HTTP (healthz, readyz) on {http_addr}");
    if settings.wal.sync == SyncMode::None {
        tracing::warn!(
            "wal.sync = \"none\": answers are sent before the log reaches the disk; a crash can lose approvals"
        );
    }

    let _lock = recovery::lock_directory(&settings.wal.dir)?;
    let tokenizer = Tokenizer::new(settings.token_key);
    let idempotency = Arc::new(
        IdempotencyStore::starting_at(
            settings.limits.idempotency_entries_max,
            settings.limits.idempotency_retention_seconds,
            unix_seconds(),
        )
        .with_waiters_max(settings.limits.retransmission_waiters_max),
    );
    // Off the runtime's thread, so that /healthz and /readyz (503 until done) answer meanwhile.
    let recovered = {
        let (settings, tokenizer, idempotency) =
            (settings.clone(), tokenizer.clone(), idempotency.clone());
        tokio::task::spawn_blocking(move || {
            recovery::recover(&settings, &tokenizer, &idempotency, unix_seconds())
        })
        .await
        .map_err(|_| anyhow!("the recovery thread panicked"))??
    };
    let total: i128 = recovered.shards.iter().map(|s| s.total()).sum();
    let accounts: usize = recovered.shards.iter().map(|s| s.account_count()).sum();
    let records_per_second =
        u128::from(recovered.report.records) * 1_000_000 / recovered.elapsed.as_micros().max(1);
    tracing::info!(
        accounts,
        shards = settings.shards,
        wal = %settings.wal.dir.display(),
        segments = recovered.report.segments,
        records = recovered.report.records,
        replayed = recovered.replayed,
        snapshot = %recovered.snapshot.as_ref().map_or("none".to_owned(), |p| p.display().to_string()),
        records_per_second = %records_per_second,
        idempotency_restored = recovered.idempotency_restored,
        total_minor = %total,
        elapsed = ?recovered.elapsed,
        "ledger recovered"
    );

    let (fatal_tx, mut fatal_rx) = mpsc::unbounded_channel::<String>();
    let (snapshot_tx, snapshot_rx) = crossbeam_channel::unbounded();
    let retention = Duration::from_secs(settings.limits.idempotency_retention_seconds);
    let snapshotter = snapshotter::start(
        settings.wal.dir.clone(),
        settings.shards,
        retention,
        snapshot_rx,
    )
    .context("cannot start the snapshotter thread")?;
    let (wal, wal_thread) = writer::start(
        settings.wal.clone(),
        Box::new(Disk),
        recovered.report.tail.clone(),
        recovered.report.next_lsn,
        move |waiting, durability, lsn| release(waiting, durability, lsn, Some(&snapshot_tx)),
        move |error| {
            tracing::error!("{error}");
            let _ = fatal_tx.send(error);
        },
    )
    .with_context(|| {
        format!(
            "cannot open the WAL in {} for writing",
            settings.wal.dir.display()
        )
    })?;

    let mut threads = Threads {
        arbiters: Vec::new(),
    };
    let mut shards = Vec::with_capacity(settings.shards);
    for shard in recovered.shards {
        let arbiter = Arbiter::new();
        let capacity = settings.limits.mailbox_capacity;
        let wal = wal.clone();
        let count = u32::try_from(settings.shards).unwrap_or(u32::MAX);
        shards.push(LedgerActor::start_in_arbiter(
            &arbiter.handle(),
            move |_| LedgerActor::new(shard, count, wal, capacity),
        ));
        threads.arbiters.push(arbiter);
    }
    drop(wal);
    let shards: Arc<[Addr<LedgerActor>]> = shards.into();

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let routes = Arc::new(settings.routes.clone());
    let acquirers = Arc::new(settings.acquirers.clone());
    let acquirer_connections: Arc<std::collections::HashMap<u64, Arc<Semaphore>>> = Arc::new(
        settings
            .acquirers
            .values()
            .map(|a| (a.id, Arc::new(Semaphore::new(a.connections_max))))
            .collect(),
    );
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
            acquirer_connections: acquirer_connections.clone(),
            idempotency: idempotency.clone(),
            tokenizer: tokenizer.clone(),
            fingerprint_key: settings.token_key,
            risk,
            shutdown: shutdown_rx.clone(),
        };
        pipelines.push((arbiter.handle(), context));
        threads.arbiters.push(arbiter);
    }

    let snapshots = settings.snapshot_interval.map(|interval| {
        let shards = shards.clone();
        actix::spawn(async move {
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            for generation in 1u64.. {
                tick.tick().await;
                for shard in shards.iter() {
                    shard.do_send(TakeSnapshot { generation });
                }
            }
        })
    });

    let sweeper = {
        let idempotency = idempotency.clone();
        actix::spawn(async move {
            let mut tick = tokio::time::interval(IDEMPOTENCY_SWEEP_INTERVAL);
            loop {
                tick.tick().await;
                if let Sweep::RotatedEarly {
                    dropped,
                    window_seconds,
                } = idempotency.sweep(unix_seconds())
                {
                    tracing::warn!(
                        dropped,
                        window_seconds,
                        "idempotency table full: retransmissions are recognised for {window_seconds} s only; \
                         raise limits.idempotency_entries_max for this load"
                    );
                }
            }
        })
    };

    let listener = socket.listen(ACCEPT_BACKLOG).with_context(|| {
        format!("cannot listen for acquirers on {acquirer_addr} (listeners.acquirer)")
    })?;
    health.set_ready(true);
    tracing::info!(
        dialect = %settings.dialect,
        framing = %settings.framing,
        config = %settings.source,
        "listening for acquirers on {acquirer_addr}"
    );
    let connections = Arc::new(Semaphore::new(settings.limits.connections_max));
    let mut next_worker = 0usize;
    let mut failure = None;
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
            Some(error) = fatal_rx.recv() => {
                failure = Some(error);
                break;
            }
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

    match &failure {
        None => tracing::info!("shutting down: no new connections; draining in-flight requests"),
        Some(_) => tracing::error!(
            "stopping: the WAL failed; answering 96 to what is in flight, then exiting for a restart"
        ),
    }
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
    if let Some(snapshots) = snapshots {
        snapshots.abort();
    }
    http.stop(true).await;
    drop(pipelines);
    drop(shards);
    // Stopping the shard arbiters drops the last handles on the log; the writer then syncs
    // what it has and ends. Joining threads blocks: do it off the async runtime.
    // The writer owns the snapshotter's only sender: the snapshotter ends after it.
    let stats = tokio::task::spawn_blocking(move || {
        threads.stop();
        let stats = wal_thread.join();
        let _ = snapshotter.join();
        stats
    })
    .await;
    let stats = match stats {
        Ok(Ok(stats)) => stats,
        _ => return Err(anyhow!("the WAL writer thread panicked")),
    };
    tracing::info!(
        total_minor = %total_after,
        conserved = total_after == total,
        wal_next_lsn = stats.next_lsn,
        wal_groups = stats.groups,
        "shutdown complete"
    );
    match failure {
        None => Ok(()),
        Some(error) => Err(anyhow!(error)),
    }
}

/// Connections waiting to be accepted at most (the kernel's queue).
const ACCEPT_BACKLOG: u32 = 1024;

/// A socket bound to `addr` (so the port is ours), not yet listening.
fn bind_acquirer_socket(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As a listener bound by the standard library, a restart on a fixed port need not wait
    // for the last run's connections in TIME_WAIT. Not for port 0: two sockets bound but not
    // yet listening may then be given the same port, and the second fails only at listen.
    if addr.port() != 0 {
        socket.set_reuseaddr(true)?;
    }
    socket.bind(addr)?;
    Ok(socket)
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
