//! Starting and stopping the switch: recovery, the WAL writer, ledger shards, worker pipelines,
//! the acquirer listener.
//!
//! Threads: one arbiter per ledger shard (the single owner of its accounts); worker arbiters
//! (`acquirer_link.workers`) running the sessions assigned to them, with risk and routing as
//! plain calls, so a request's steps before the ledger stay on one thread; the WAL writer's own
//! thread; the main arbiter accepts.
//!
//! [`serve`] is three steps: [`start`] (listeners bound, so a port in use fails fast; WAL
//! directory locked; genesis plus log replayed off the runtime thread; writer started after the
//! log's tail; shards and worker pipelines started with the recovered state), the accept loop
//! of `crate::acquirer::listener` (only now do acquirers connect, and `/readyz` is ready), and
//! [`shutdown`] (no new connections, in-flight requests drained, threads joined, WAL synced).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use actix::prelude::*;
use anyhow::{Context as _, anyhow};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::acquirer::archive::{self, AnswerArchive};
use crate::acquirer::idempotency::{IdempotencyStore, Sweep};
use crate::acquirer::listener::{self, Ended};
use crate::acquirer::session::SessionContext;
use crate::clock::unix_seconds;
use crate::config::Settings;
use crate::domain::Tokenizer;
use crate::domain::TxnKey;
use crate::issuer::Health as IssuerHealth;
use crate::issuer::channel::{ChannelContext, IssuerChannel};
use crate::issuer::message::Sealer;
use crate::issuer::pins::Pins;
use crate::ledger::actor::{LedgerActor, Releaser, ShardTotal, TakeSnapshot};
use crate::limits::{ACCEPT_BACKLOG, ZEROED_SEGMENT_MAX};
use crate::ops::admin::{AdminState, Context as AdminContext};
use crate::ops::http::{self, Health};
use crate::ops::journal::Journal;
use crate::ops::metrics::{self, metrics};
use crate::pipeline::Answerer;
use crate::recovery::{self, DirectoryLock};
use crate::risk::RiskEngine;
use crate::routing::dispatch::{Channels, Current, Dispatcher};
use crate::wal::format::Advice;
use crate::wal::snapshotter;
use crate::wal::writer::{self, SyncMode, WriterStats, ZeroFilled};

/// How often the idempotency table may drop its older generation.
const IDEMPOTENCY_SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// How often the snapshot timer looks at the clock and at the records logged.
const SNAPSHOT_CHECK_INTERVAL: Duration = Duration::from_secs(1);

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

/// The switch once started, up to accepting acquirers: what [`shutdown`] stops.
struct Running {
    acquirer_addr: std::net::SocketAddr,
    health: Arc<Health>,
    _lock: DirectoryLock,
    /// The ledger total after recovery, to say at the end whether it is unchanged.
    total: i128,
    threads: Threads,
    shards: Arc<[Addr<LedgerActor>]>,
    workers: Vec<(ArbiterHandle, SessionContext)>,
    shutdown_tx: watch::Sender<bool>,
    fatal_rx: mpsc::UnboundedReceiver<String>,
    /// The snapshot, idempotency-sweep and orphan-expiry timers.
    timers: Vec<tokio::task::JoinHandle<()>>,
    wal_thread: JoinHandle<WriterStats>,
    snapshotter: JoinHandle<()>,
}

/// Runs the switch until `stop` resolves (or the WAL fails), then drains and returns. Must run
/// inside an actix `System`. An error return means the process should exit non-zero.
pub async fn serve(settings: Settings, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    // SIGHUP's default action ends the process: take it over before anything else, so that a
    // reload sent during a long recovery is not an outage.
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    // The HTTP listener first: /healthz and /readyz answer through recovery. Stopped before
    // any error returns, so that the error is the last line the process prints.
    let health = Arc::new(Health::default());
    let admin = Arc::new(AdminState::new(settings.admin_token.clone()));
    if settings.admin_token.as_deref()
        == Settings::embedded()
            .ok()
            .and_then(|d| d.admin_token)
            .as_deref()
        && settings.admin_token.is_some()
    {
        tracing::warn!(
            "admin.token is the public demo token of the default configuration: set a secret one"
        );
    }
    let (http, http_addr) = http::start(settings.http_listen, health.clone(), admin.clone())?;
    tracing::info!("HTTP (healthz, readyz) on {http_addr}");
    let (socket, mut running) = match start(&settings, health, &admin).await {
        Ok(started) => started,
        Err(error) => {
            http.stop(true).await;
            return Err(error);
        }
    };
    let listener = match socket.listen(ACCEPT_BACKLOG) {
        Ok(listener) => listener,
        Err(error) => {
            let addr = running.acquirer_addr;
            // No connection was ever accepted: every place is free.
            let free = Arc::new(Semaphore::new(settings.limits.connections_max));
            shutdown(&settings, running, http, &free, Ended::Stopped).await?;
            return Err(anyhow!(error).context(format!(
                "cannot listen for acquirers on {addr} (listeners.acquirer)"
            )));
        }
    };
    running.health.set_ready(true);
    tracing::info!(
        dialect = %settings.dialect,
        framing = %settings.framing,
        tls = settings.tls.is_some(),
        config = %settings.source,
        "listening for acquirers on {}",
        running.acquirer_addr
    );
    let hangups = watch_hangups(admin.clone(), hangup);
    let connections = Arc::new(Semaphore::new(settings.limits.connections_max));
    let ended = listener::accept_loop(
        &listener,
        &running.workers,
        &connections,
        stop,
        &mut running.fatal_rx,
    )
    .await;
    drop(listener);
    hangups.abort();
    shutdown(&settings, running, http, &connections, ended).await
}

/// SIGHUP reloads the routing table and the risk rules from the configuration file, as
/// `POST /v1/config/reload` does: an invalid file is refused, with its error logged, and the
/// running rules stay.
fn watch_hangups(
    admin: Arc<AdminState>,
    hangup: std::io::Result<tokio::signal::unix::Signal>,
) -> tokio::task::JoinHandle<()> {
    actix::spawn(async move {
        let Ok(mut hangups) = hangup else {
            tracing::warn!("cannot watch SIGHUP: reload through the admin API instead");
            return;
        };
        while hangups.recv().await.is_some() {
            let Some(context) = admin.context.get() else {
                continue;
            };
            match crate::ops::admin::reload(context) {
                Ok(_) => {
                    tracing::info!(file = %context.source, "configuration reloaded (routes, risk) on SIGHUP")
                }
                Err(error) => {
                    tracing::error!(%error, "configuration not reloaded on SIGHUP: the running rules stay")
                }
            }
        }
    })
}

/// Everything up to accepting acquirers: listeners bound, the log recovered, the writer,
/// shards and worker pipelines started.
async fn start(
    settings: &Settings,
    health: Arc<Health>,
    admin: &AdminState,
) -> anyhow::Result<(tokio::net::TcpSocket, Running)> {
    // Bound now, so that a port in use fails the start at once; listening (accepting
    // connections) only once recovery is done and the switch can answer, so that acquirers do
    // not connect and hang during a long replay but fail over.
    let socket = listener::bind(settings.acquirer_listen).with_context(|| {
        format!(
            "cannot listen for acquirers on {} (listeners.acquirer)",
            settings.acquirer_listen
        )
    })?;
    let acquirer_addr = socket
        .local_addr()
        .context("listener has no local address")?;
    if settings.wal.sync == SyncMode::None {
        tracing::warn!(
            "wal.sync = \"none\": answers are sent before the log reaches the disk; a crash can lose approvals"
        );
    }

    if Settings::embedded().is_ok_and(|demo| demo.token_key == settings.token_key) {
        tracing::warn!(
            "ledger.token_key is the public demo key of the default configuration: set a secret one for real cards \
             (before the first start: a log cannot change it)"
        );
    }
    let lock = recovery::lock_directory(&settings.wal.dir)?;
    // Segments written ahead, with zeros, so that the log's syncs carry no file system
    // metadata (writer::ZeroFilled): the first while recovery runs. Not segments so large
    // that writing one ahead would load the disk for minutes.
    let storage: Box<dyn writer::Storage> = if settings.wal.segment_bytes <= ZEROED_SEGMENT_MAX {
        Box::new(
            ZeroFilled::new(&settings.wal.dir, settings.wal.segment_bytes)
                .context("cannot start the thread writing WAL segments ahead")?,
        )
    } else {
        Box::new(writer::Disk)
    };
    let tokenizer = Tokenizer::new(settings.token_key);
    let mut idempotency = IdempotencyStore::starting_at(
        settings.limits.idempotency_entries_max,
        settings.limits.idempotency_retention_seconds,
        unix_seconds(),
    )
    .with_waiters_max(settings.limits.retransmission_waiters_max);
    let archive_max = settings.limits.idempotency_archive_entries_max;
    // Emptied at every start: recovery puts back what the retention still covers.
    let answers_dir = settings.wal.dir.join(recovery::ANSWERS_DIR);
    if archive_max > 0 && archive::supported() {
        let archive = AnswerArchive::create(&answers_dir, archive_max)?;
        let watched = Arc::downgrade(&archive);
        metrics::watch_store("answers", move || watched.upgrade().map(|a| a.health()))
            .context("cannot start the thread watching the answers on disk")?;
        idempotency = idempotency.with_archive(archive);
    } else {
        if archive_max > 0 {
            tracing::warn!(
                "this CPU lacks popcnt or bmi2: no answers on disk, so a load beyond limits.idempotency_entries_max \
                 shortens the idempotency retention"
            );
        }
        if let Err(error) = AnswerArchive::remove(&answers_dir) {
            tracing::warn!(
                error = format!("{error:#}"),
                "cannot remove the answers on disk of an earlier start"
            );
        }
    }
    let idempotency = Arc::new(idempotency);
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

    let (fatal_tx, fatal_rx) = mpsc::unbounded_channel::<String>();
    let (snapshot_tx, snapshot_rx) = crossbeam_channel::unbounded();
    let pins = Arc::new(Pins::default());
    for (lsn, _) in recovered.remote.advices.values() {
        pins.pin(*lsn);
    }
    // Requests sent with no decision logged: their RemoteSent records are needed until their
    // channels have logged the decision (91, with the reversal).
    for settled in &recovered.remote.settled {
        pins.pin(settled.lsn);
    }
    let retention = Duration::from_secs(settings.limits.idempotency_retention_seconds);
    let snapshot_progress = Arc::new(snapshotter::Progress::default());
    let snapshotter = snapshotter::start(
        settings.wal.dir.clone(),
        settings.shards,
        settings.issuers.len(),
        retention,
        snapshot_rx,
        pins.clone(),
        recovered.cold.clone(),
        snapshot_progress.clone(),
    )
    .context("cannot start the snapshotter thread")?;
    if let Some(cold) = &recovered.cold {
        let watched = Arc::downgrade(cold);
        metrics::watch_store("transactions", move || {
            watched.upgrade().map(|c| c.health())
        })
        .context("cannot start the thread watching the transactions on disk")?;
    }
    let (wal, wal_thread) = writer::start(
        settings.wal.clone(),
        storage,
        recovered.report.tail.clone(),
        recovered.report.next_lsn,
        Releaser::new(Some(snapshot_tx)),
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
    // Per shard, the requests routed to it and not yet taken up (`limits.mailbox_capacity`).
    let queued: Arc<[std::sync::atomic::AtomicUsize]> = (0..settings.shards)
        .map(|_| std::sync::atomic::AtomicUsize::new(0))
        .collect();
    for (index, shard) in recovered.shards.into_iter().enumerate() {
        let arbiter = Arbiter::new();
        arbiter.spawn_fn(move || crate::threads::name_this_thread(&format!("shard-{index}")));
        let capacity = settings.limits.mailbox_capacity;
        let wal = wal.clone();
        let count = u32::try_from(settings.shards).unwrap_or(u32::MAX);
        let queued = queued.clone();
        shards.push(LedgerActor::start_in_arbiter(
            &arbiter.handle(),
            move |_| LedgerActor::new(shard, count, wal, capacity, queued),
        ));
        threads.arbiters.push(arbiter);
    }
    let shards: Arc<[Addr<LedgerActor>]> = shards.into();

    // One channel per issuer, each on its own thread (an issuer's latency never holds up a
    // worker), with the queue and the approvals the log holds for it.
    let sealer = Arc::new(Sealer::new(&settings.token_key));
    let recovered_snapshot_lsn = recovered.snapshot_lsn;
    let mut remote = recovered.remote;
    let mut channels = HashMap::new();
    for (index, issuer) in settings.issuers.iter().enumerate() {
        // Read at start: an unreadable or invalid file stops it, naming the key and the file.
        let tls = crate::issuer::tls::client(index, issuer).map_err(|e| anyhow!(e))?;
        let queued: Vec<(u64, Advice)> = remote
            .advices
            .values()
            .filter(|(_, a)| a.issuer == issuer.name)
            .cloned()
            .collect();
        let sent: Vec<(TxnKey, [u8; 4], u32, bool)> = remote
            .sent
            .iter()
            .filter(|(name, ..)| *name == issuer.name)
            .map(|(_, key, mti, stan)| {
                let reversed = remote.reversed.contains(&(*key, *stan));
                (*key, *mti, *stan, reversed)
            })
            .collect();
        let settled: Vec<crate::recovery::Settled> = remote
            .settled
            .iter()
            .filter(|s| s.issuer == issuer.name)
            .cloned()
            .collect();
        let health = Arc::new(IssuerHealth::default());
        let context = ChannelContext {
            wal: wal.clone(),
            pins: pins.clone(),
            sealer: sealer.clone(),
            acquirer_dialect: settings.dialect.dialect(),
            health: health.clone(),
            tls,
        };
        let arbiter = Arbiter::new();
        let thread_name = format!("issuer-{}", issuer.name);
        arbiter.spawn_fn(move || crate::threads::name_this_thread(&thread_name));
        let issuer = issuer.clone();
        let capacity = settings.limits.mailbox_capacity;
        let name = issuer.name.clone();
        let channel = IssuerChannel::start_in_arbiter(&arbiter.handle(), move |ctx| {
            ctx.set_mailbox_capacity(capacity);
            IssuerChannel::new(issuer, context, queued, sent, settled)
        });
        let label: Arc<str> = Arc::from(name.as_str());
        channels.insert(name, (channel, health, label));
        threads.arbiters.push(arbiter);
    }
    // What the log holds for issuers no longer configured: kept (pinned) a day, then given
    // up, so that a removed issuer cannot stop the log from being pruned.
    let configured = |name: &str| settings.issuers.iter().any(|i| i.name == name);
    let mut orphans = Vec::new();
    for (lsn, advice) in std::mem::take(&mut remote.advices).into_values() {
        if !configured(&advice.issuer) {
            tracing::error!(
                issuer = advice.issuer,
                lsn,
                "the log holds an advice queued for an issuer no longer configured: it is kept \
                 for a day after it was made (sent if the issuer is configured again), then given up"
            );
            orphans.push(crate::issuer::orphans::Orphan::Advice { lsn, advice });
        }
    }
    for settled in std::mem::take(&mut remote.settled) {
        if !configured(&settled.issuer) {
            tracing::error!(
                issuer = settled.issuer,
                lsn = settled.lsn,
                "a request sent to an issuer no longer configured has no decision in the log: \
                 kept for a day (its reversal goes if the issuer is configured again), then \
                 given up; reconcile it by hand"
            );
            orphans.push(crate::issuer::orphans::Orphan::Settled(settled));
        }
    }
    let orphans = crate::issuer::orphans::start(wal.clone(), pins.clone(), orphans);
    let channels: Channels = Arc::new(channels);
    let logged_lsn = wal.logged_lsn();
    drop(wal);

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let routes = Arc::new(settings.routes.clone());
    let acquirers = Arc::new(settings.acquirers.clone());
    let acquirer_connections: Arc<HashMap<u64, Arc<Semaphore>>> = Arc::new(
        settings
            .acquirers
            .values()
            .map(|a| (a.id, Arc::new(Semaphore::new(a.connections_max))))
            .collect(),
    );
    let acquirer_inflight: Arc<HashMap<u64, Arc<Semaphore>>> = Arc::new(
        settings
            .acquirers
            .values()
            .filter_map(|a| Some((a.id, Arc::new(Semaphore::new(a.inflight_max?)))))
            .collect(),
    );
    let workers = settings.workers;
    let journal = Arc::new(Journal::new(workers, settings.limits.decisions_kept));
    let mut pipelines = Vec::with_capacity(workers);
    let engine = Arc::new(RiskEngine::new(settings.risk.clone()).map_err(|e| anyhow!(e))?);
    let rules = Arc::new(Current::new(engine.clone()));
    let current_routes = Arc::new(Current::new(routes.clone()));
    // Read at start: an unreadable or invalid file stops it, naming the key and the file.
    let tls = settings
        .tls
        .as_ref()
        .map(|t| crate::acquirer::tls::listener(t).map_err(|e| anyhow!(e)))
        .transpose()?;
    for worker in 0..workers {
        let arbiter = Arbiter::new();
        arbiter.spawn_fn(move || crate::threads::name_this_thread(&format!("worker-{worker}")));
        let dispatcher = Arc::new(Dispatcher::new(
            rules.clone(),
            current_routes.clone(),
            shards.clone(),
            queued.clone(),
            settings.limits.mailbox_capacity,
            channels.clone(),
        ));
        let answerer = Arc::new(Answerer::start_in_arbiter(&arbiter.handle(), |_| Answerer));
        let context = SessionContext {
            dialect: settings.dialect.dialect(),
            framing: settings.framing,
            max_frame_bytes: settings.max_frame_bytes,
            limits: settings.limits,
            acquirers: acquirers.clone(),
            acquirer_connections: acquirer_connections.clone(),
            acquirer_inflight: acquirer_inflight.clone(),
            idempotency: idempotency.clone(),
            tokenizer: tokenizer.clone(),
            fingerprint_key: settings.token_key,
            dispatcher,
            shutdown: shutdown_rx.clone(),
            journal: journal.clone(),
            journal_part: worker,
            worker,
            answerer,
            tls: tls.clone(),
        };
        pipelines.push((arbiter.handle(), context));
        threads.arbiters.push(arbiter);
    }

    // A snapshot every `interval`, or sooner once `snapshot_records` were logged since the
    // last: what a restart replays is bounded at any rate. Never two at once: a snapshot of a
    // large ledger takes seconds to write, and images waiting for it would pile up.
    let snapshots = settings.snapshot_interval.map(|interval| {
        let shards = shards.clone();
        let channels: Vec<Addr<IssuerChannel>> =
            channels.values().map(|(c, ..)| c.clone()).collect();
        let (logged, every_records) = (logged_lsn.clone(), settings.snapshot_records);
        let snapshot_lsn = recovered_snapshot_lsn;
        let progress = snapshot_progress.clone();
        actix::spawn(async move {
            let mut tick = tokio::time::interval(SNAPSHOT_CHECK_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let lsn = move || logged.load(std::sync::atomic::Ordering::Acquire);
            // Counted from the snapshot recovery started from: a restart that replayed many
            // records takes one soon, so that restarts in a row do not replay more and more.
            let mut last = (std::time::Instant::now(), snapshot_lsn);
            for generation in 1u64.. {
                loop {
                    tick.tick().await;
                    let since = last.0.elapsed();
                    let logged = lsn().saturating_sub(last.1);
                    let due = since >= interval || every_records.is_some_and(|n| logged >= n);
                    // The one before not done with: wait for it while it is being written,
                    // however long; for one whose parts never all arrived (a shard with a
                    // failed store gives none), an interval at most.
                    let previous = generation - 1;
                    let (gathered, finished) = (
                        progress.gathered.load(std::sync::atomic::Ordering::Acquire),
                        progress.finished.load(std::sync::atomic::Ordering::Acquire),
                    );
                    let busy = finished < previous && (gathered >= previous || since < interval);
                    if due && !busy {
                        break;
                    }
                }
                last = (std::time::Instant::now(), lsn());
                for shard in shards.iter() {
                    shard.do_send(TakeSnapshot { generation });
                }
                for channel in &channels {
                    channel.do_send(TakeSnapshot { generation });
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
                let sweep = idempotency.sweep(unix_seconds());
                metrics()
                    .idempotency_entries
                    .set(i64::try_from(idempotency.len()).unwrap_or(i64::MAX));
                metrics()
                    .idempotency_archived
                    .set(i64::try_from(idempotency.archived()).unwrap_or(i64::MAX));
                match sweep {
                    Sweep::RotatedEarly {
                        dropped,
                        window_seconds,
                    } => tracing::warn!(
                        dropped,
                        window_seconds,
                        "idempotency table full: retransmissions are recognised for {window_seconds} s only; \
                         raise limits.idempotency_entries_max for this load"
                    ),
                    Sweep::Archived {
                        archived,
                        window_seconds,
                        pushed,
                    } => {
                        if archived > 0 {
                            tracing::info!(
                                archived,
                                window_seconds,
                                "idempotency table full after {window_seconds} s: older answers moved to disk for the rest of the retention"
                            );
                        }
                        if pushed.entries > 0 {
                            tracing::warn!(
                                forgotten = pushed.entries,
                                window_seconds = pushed.window_seconds,
                                "answers on disk at limits.idempotency_archive_entries_max: retransmissions are \
                                 recognised for {} s only; raise it (or limits.idempotency_entries_max) for this load",
                                pushed.window_seconds
                            );
                        }
                    }
                    Sweep::Nothing | Sweep::Rotated { .. } => {}
                }
            }
        })
    };

    // The admin API works from here on: the ledger is recovered and its shards run.
    let _ = admin.context.set(AdminContext {
        shards: shards.clone(),
        idempotency: idempotency.clone(),
        tokenizer: tokenizer.clone(),
        key: settings.token_key,
        running: std::sync::RwLock::new((settings.routes.clone(), engine)),
        journal,
        rules,
        routes: current_routes,
        channels: settings
            .issuers
            .iter()
            .filter_map(|i| channels.get(&i.name).map(|(c, ..)| c.clone()))
            .collect(),
        source: settings.source.clone(),
    });
    let mut timers = vec![sweeper];
    timers.extend(snapshots);
    timers.extend(orphans);
    let running = Running {
        acquirer_addr,
        health,
        _lock: lock,
        total,
        threads,
        shards,
        workers: pipelines,
        shutdown_tx,
        fatal_rx,
        timers,
        wal_thread,
        snapshotter,
    };
    Ok((socket, running))
}

/// Stops accepting, drains what is in flight, stops the threads and syncs the log. `Ok` for a
/// clean stop; the WAL's failure otherwise (the process then exits 1 for a restart).
async fn shutdown(
    settings: &Settings,
    running: Running,
    http: actix_web::dev::ServerHandle,
    connections: &Arc<Semaphore>,
    ended: Ended,
) -> anyhow::Result<()> {
    let Running {
        health,
        total,
        threads,
        shards,
        workers,
        shutdown_tx,
        timers,
        wal_thread,
        snapshotter,
        ..
    } = running;
    let failure = match ended {
        Ended::Stopped => None,
        Ended::Failed(error) => Some(error),
    };
    match &failure {
        None => tracing::info!("shutting down: no new connections; draining in-flight requests"),
        Some(_) => tracing::error!(
            "stopping: the WAL failed; answering 96 to what is in flight, then exiting for a restart"
        ),
    }
    health.set_ready(false);
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
    for timer in timers {
        timer.abort();
    }
    http.stop(true).await;
    drop(workers);
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
