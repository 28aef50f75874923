//! One acquirer connection: a reader task and a writer task on the worker's arbiter, and the
//! session's answer.
//!
//! - The **reader** takes frames off the socket, decodes them, answers what needs no pipeline
//!   (0800, code 30, 94, replays) and hands the rest to the worker's dispatcher (risk and
//!   routing, plain calls). Before each request it takes an in-flight slot; when all slots are
//!   taken it stops reading, so a client that sends faster than the switch answers meets TCP
//!   backpressure, not a growing queue.
//! - The **answer** ([`Answer`] on the session) records the outcome for idempotency and hands
//!   the encoded response to the writer: on the worker for answers a WAL group released, at once
//!   on the deciding thread for the others. Responses go out as they complete, in any order;
//!   the acquirer matches them by field 11.
//! - The **writer** gathers every response ready at once into one `write` and only then frees
//!   their slots, so slots bound requests in the pipeline and responses awaiting the socket.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use adapters::{Dialect, DialectName, FrameError, FrameHeader, Message, PartialDecode};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use super::Acquirer;
use super::idempotency::{Begin, IdempotencyStore};
use super::iso::{self, Class};
use super::mac::{self, MacKey};
use crate::clock::unix_seconds;
use crate::domain::{Outcome, ResponseCode, Tokenizer};
use crate::limits::{Limits, READ_CHUNK_BYTES, RESPONSE_BYTES_USUAL, WRITE_BATCH_BYTES};
use crate::ops::journal::{Decision, Journal};
use crate::ops::metrics::{Route, Stage, metrics};
use crate::pipeline::{Answer, Answerer, Reply, ReplyTo, Transaction};
use crate::routing::dispatch::Dispatcher;

/// What every session on one worker shares. (`Debug` by hand: not the fingerprint key.)
#[derive(Clone)]
pub struct SessionContext {
    pub dialect: &'static Dialect,
    pub framing: FrameHeader,
    pub max_frame_bytes: usize,
    pub limits: Limits,
    pub acquirers: Arc<HashMap<u64, Acquirer>>,
    /// Per acquirer, a permit for each connection it may hold (`acquirers.connections_max`).
    pub acquirer_connections: Arc<HashMap<u64, Arc<Semaphore>>>,
    /// Per acquirer with `inflight_max`, a permit for each of its requests being decided.
    pub acquirer_inflight: Arc<HashMap<u64, Arc<Semaphore>>>,
    pub idempotency: Arc<IdempotencyStore>,
    pub tokenizer: Tokenizer,
    /// Key of the request fingerprint (`ledger.token_key`).
    pub fingerprint_key: [u8; 16],
    /// This worker's risk screening, routing and hand-over to the ledger shards.
    pub dispatcher: Arc<Dispatcher>,
    pub shutdown: watch::Receiver<bool>,
    /// Where answers are kept for operators, and this worker's part of it.
    pub journal: Arc<Journal>,
    pub journal_part: usize,
    /// This worker's index and its answer queue, where the WAL writer hands it the answers of
    /// each group at once.
    pub worker: usize,
    pub answerer: Arc<Addr<Answerer>>,
    /// `[tls]`: every connection is TLS (a plain one fails its handshake).
    pub tls: Option<super::tls::Listener>,
}

impl std::fmt::Debug for SessionContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionContext")
            .field("framing", &self.framing)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("limits", &self.limits)
            .field("journal_part", &self.journal_part)
            .finish_non_exhaustive()
    }
}

/// An encoded frame and the in-flight slot it frees once written.
type Outgoing = (Vec<u8>, OwnedSemaphorePermit);

/// Encodes responses into frames and queues them for the writer.
#[derive(Clone, Debug)]
struct Responder {
    dialect: &'static Dialect,
    framing: FrameHeader,
    writer: mpsc::Sender<Outgoing>,
    peer: SocketAddr,
    /// The key of the acquirer this connection is bound to, once bound after a correct MAC:
    /// from then on every response but network management carries a MAC (DESIGN 2.6).
    mac: Arc<OnceLock<MacKey>>,
}

impl Responder {
    /// Sends `response`; if an echoed field cannot be encoded (it came malformed), falls back to
    /// the fields that identify the request. Returns false when nothing could be sent.
    fn send(&self, response: &Message<'_>, permit: OwnedSemaphorePermit) -> bool {
        let frame = self.encode(response).or_else(|| {
            let mut minimal = Message::new(response.mti);
            for field in [7, 11, 32, 39, 41] {
                if let Some(value) = response.get(field) {
                    minimal.set(field, value);
                }
            }
            self.encode(&minimal)
        });
        match frame {
            Some(frame) => {
                // The channel holds one entry per in-flight slot, so it cannot be full; it is
                // closed only when the writer has already failed on the socket.
                let _ = self.writer.try_send((frame, permit));
                true
            }
            None => false,
        }
    }

    fn encode(&self, message: &Message<'_>) -> Option<Vec<u8>> {
        let header_len = self.framing.header_len();
        // Room for a usual response: the encoder's reserve then allocates nothing more.
        let mut frame = Vec::with_capacity(header_len + RESPONSE_BYTES_USUAL);
        frame.resize(header_len, 0);
        let key = self.mac.get().filter(|_| message.mti.0[1] != b'8');
        let encoded = match key {
            None => self.dialect.encode(message, &mut frame),
            Some(_) => {
                // The MAC field is the last one: 128 once any field above 64 is present.
                let mut signed = message.clone();
                signed.remove(64);
                signed.remove(128);
                let highest = signed.fields().last().map_or(0, |(field, _)| field);
                let placeholder: &[u8] = match self.dialect.name {
                    DialectName::AsciiHexBitmap => b"0000000000000000",
                    _ => &[0; 8],
                };
                signed.set(mac::mac_field(highest), placeholder);
                self.dialect.encode(&signed, &mut frame)
            }
        };
        if let Err(error) = encoded {
            tracing::debug!(peer = %self.peer, %error, "response not encodable");
            return None;
        }
        if let Some(key) = key {
            let len = match self.dialect.name {
                DialectName::AsciiHexBitmap => 16,
                _ => 8,
            };
            mac::sign(key, &mut frame[header_len..], len);
        }
        if let Err(error) = self.framing.fill(frame.len() - header_len, &mut frame) {
            tracing::warn!(peer = %self.peer, %error, "response too large for the frame header");
            return None;
        }
        Some(frame)
    }
}

/// Answers the pipeline's decisions for one connection: on its worker's thread for answers a
/// WAL group released, at once on the deciding thread for the others.
#[derive(Debug)]
struct Session {
    responder: Responder,
    idempotency: Arc<IdempotencyStore>,
    journal: Arc<Journal>,
    journal_part: usize,
}

impl Answer for Session {
    fn unanswered(&self, identity: &crate::domain::RequestIdentity) {
        tracing::warn!(
            stan = identity.stan,
            "a request was dropped without an answer: its identity is given back (96)"
        );
        self.idempotency
            .abandon(identity, Outcome::decline(ResponseCode::SystemMalfunction));
        metrics().inflight.dec();
    }

    fn answer(&self, reply: Reply) {
        let Reply {
            mut transaction,
            outcome,
            shed,
        } = reply;
        transaction.guard.disarm();
        if outcome.code.is_approved() && !shed {
            std::mem::take(&mut transaction.velocity).approved();
        }
        // The rule behind the answer: a risk decline's, or an approval's review flag (not a
        // flag on a request the ledger then declined).
        let rule = if outcome.code.is_approved() {
            transaction.flag.take()
        } else {
            transaction.rule.take()
        };
        if shed {
            self.idempotency.abandon(&transaction.identity, outcome);
        } else {
            self.idempotency.finish(&transaction.identity, outcome);
        }
        let metrics = metrics();
        metrics.inflight.dec();
        metrics.observe(Stage::Total, transaction.received.elapsed());
        match self.responder.dialect.decode(&transaction.frame) {
            Ok(request) => {
                metrics.count(&request.mti.0, outcome.code, transaction.route);
                log_decline(
                    &request.mti.0,
                    transaction.identity.stan,
                    outcome.code,
                    rule.as_deref(),
                    transaction.via.as_ref(),
                );
                self.journal.record(
                    self.journal_part,
                    Decision {
                        at_seconds: unix_seconds(),
                        key: transaction.identity,
                        rrn: rrn(&request),
                        card: Some(transaction.request.card),
                        mti: request.mti.0,
                        amount: transaction.request.amount,
                        code: outcome.code,
                        route: transaction.route,
                        rule,
                        via: transaction.via.take(),
                    },
                );
                if let Some(response) = iso::response(&request, &outcome) {
                    self.responder.send(&response, transaction.permit);
                }
            }
            Err(error) => tracing::error!(%error, "a request that decoded once no longer decodes"),
        }
        tracing::trace!(
            elapsed = ?transaction.received.elapsed(),
            "answered"
        );
    }
}

/// Field 37, space-padded to 12.
fn rrn(message: &Message<'_>) -> [u8; 12] {
    let mut rrn = [b' '; 12];
    if let Some(value) = message.get(37) {
        let n = value.len().min(12);
        rrn[..n].copy_from_slice(&value[..n]);
    }
    rrn
}

/// One line per declined financial request, at info, naming the check that decided it and,
/// for a risk decline, the rule (never the card: the STAN and MTI identify it to the acquirer);
/// and one per approval that a risk score flagged for review.
fn log_decline(
    mti: &[u8; 4],
    stan: u32,
    code: ResponseCode,
    rule: Option<&str>,
    via: Option<&crate::pipeline::Via>,
) {
    // Not the overload sheds (91): a line each would add to the overload (metrics count them).
    if !code.is_approved() && code != ResponseCode::IssuerUnavailable {
        tracing::info!(
            mti = %String::from_utf8_lossy(mti),
            stan,
            response_code = code.as_str(),
            check = code.check(),
            rule,
            issuer = via.map(|v| &*v.issuer),
            issuer_route = via.map(|v| v.how),
            "declined"
        );
    } else if let Some(via) = via
        && via.how != "primary"
    {
        // A remote answer not from the primary issuer (a fallback's, or the switch's own
        // stand-in): rare, and an operator wants each.
        tracing::info!(
            mti = %String::from_utf8_lossy(mti),
            stan,
            response_code = code.as_str(),
            issuer = &*via.issuer,
            issuer_route = via.how,
            "answered by a fallback or in stand-in"
        );
    } else if code.is_approved()
        && let Some(rule) = rule
    {
        tracing::info!(
            mti = %String::from_utf8_lossy(mti),
            stan,
            response_code = code.as_str(),
            rule,
            "approved, flagged for review"
        );
    }
}

/// Why a connection ended, for the log line.
#[derive(Debug, thiserror::Error)]
enum Close {
    #[error("closed by the acquirer")]
    PeerClosed,
    #[error("closed by the acquirer in the middle of a frame ({0} bytes pending)")]
    PeerClosedMidFrame(usize),
    #[error("idle for {0:?}")]
    Idle(Duration),
    #[error("switch shutting down")]
    Shutdown,
    #[error("the acquirer read no response for {0:?}")]
    WriteTimeout(Duration),
    #[error(
        "acquirer {acquirer} already holds its {limit} connections (acquirers.connections_max)"
    )]
    AcquirerConnections { acquirer: u64, limit: usize },
    #[error("{0}")]
    Framing(FrameError),
    #[error("unreadable message: {0}")]
    Unreadable(String),
    #[error("read failed: {0}")]
    Io(io::Error),
}

/// Serves one accepted connection until it closes, then waits for its in-flight requests:
/// in TLS with `[tls]` (after a handshake within its timeout), else as it is.
pub async fn run(stream: TcpStream, peer: SocketAddr, context: SessionContext) {
    let _ = stream.set_nodelay(true);
    let Some(tls) = context.tls.clone() else {
        let (read_half, write_half) = stream.into_split();
        return serve(read_half, write_half, peer, None, context).await;
    };
    // Handshakes at once are bounded apart from connections: peers that never finish one
    // (or make the switch sign for nothing) cannot take every place.
    let Ok(handshake) = tls.handshakes.clone().try_acquire_owned() else {
        tracing::warn!(%peer, "connection closed: tls.handshakes_max handshakes under way");
        return;
    };
    let stream = match tokio::time::timeout(tls.handshake_timeout, tls.acceptor.accept(stream))
        .await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::info!(%peer, %error, "TLS handshake failed: connection closed");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, timeout = ?tls.handshake_timeout, "no TLS handshake in time (tls.handshake_timeout_seconds): connection closed");
            return;
        }
    };
    drop(handshake);
    let certificate = match super::tls::peer_common_name(stream.get_ref().1) {
        Ok(name) => name,
        Err(problem) => {
            tracing::warn!(%peer, problem, "client certificate refused: connection closed");
            return;
        }
    };
    let (read_half, write_half) = tokio::io::split(stream);
    serve(read_half, write_half, peer, Some(certificate), context).await;
}

/// Serves a connection's two halves. `certificate`: `None` for plain TCP; for TLS, the subject
/// common name of the client's certificate, if it sent one.
async fn serve<R, W>(
    read_half: R,
    write_half: W,
    peer: SocketAddr,
    certificate: Option<Option<String>>,
    context: SessionContext,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + 'static,
{
    let inflight = context.limits.inflight_per_connection;
    let (writer_tx, writer_rx) = mpsc::channel(inflight);
    let write_timeout = Duration::from_secs(context.limits.write_timeout_seconds);
    let writer_task = actix::spawn(write_loop(write_half, writer_rx, peer, write_timeout));
    let responder = Responder {
        dialect: context.dialect,
        framing: context.framing,
        writer: writer_tx,
        peer,
        mac: Arc::new(OnceLock::new()),
    };
    let session: Arc<dyn Answer> = Arc::new(Session {
        responder: responder.clone(),
        idempotency: context.idempotency.clone(),
        journal: context.journal.clone(),
        journal_part: context.journal_part,
    });
    let slots = Arc::new(Semaphore::new(inflight));
    let tls = certificate.is_some();
    let certificate = certificate.flatten();
    tracing::info!(%peer, tls, certificate = certificate.as_deref(), "acquirer connected");
    // DESIGN 2.6: bound by certificate, or else by source.
    let by_certificate = certificate.as_deref().and_then(|cn| {
        context
            .acquirers
            .values()
            .find(|a| a.client_cert_cn.as_deref() == Some(cn))
            .map(|a| a.id)
    });
    let reader = Reader {
        context: &context,
        responder,
        reply_to: ReplyTo {
            session: session.clone(),
            worker: context.worker,
            answerer: context.answerer.clone(),
        },
        slots: slots.clone(),
        peer,
        bound: std::sync::Mutex::new(None),
        by_source: by_certificate
            .or_else(|| super::bound_by_source(context.acquirers.values(), peer.ip())),
        certificate,
    };
    let close = reader.read_loop(read_half).await;
    drop(reader);
    // Every slot back means every request read was answered and its response written.
    let drain = Duration::from_secs(context.limits.shutdown_drain_seconds.max(1));
    let all = u32::try_from(inflight).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(drain, slots.acquire_many(all))
        .await
        .is_ok();
    drop(session);
    // A writer that cannot finish (a peer that reads nothing, even the close) is stopped: the
    // connection's socket must not outlive its place among `limits.connections_max`.
    let mut writer_task = writer_task;
    if tokio::time::timeout(drain, &mut writer_task).await.is_err() {
        writer_task.abort();
    }
    match &close {
        Close::PeerClosed | Close::Shutdown => {
            tracing::info!(%peer, drained, "acquirer disconnected: {close}")
        }
        _ => tracing::warn!(%peer, drained, "acquirer connection closed: {close}"),
    }
}

/// Writes responses as they come. A peer that accepts no bytes for `timeout` (it stopped
/// reading) ends the loop: the queue is dropped, which frees its slots and tells the reader to
/// close the connection.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut socket: W,
    mut queue: mpsc::Receiver<Outgoing>,
    peer: SocketAddr,
    timeout: Duration,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH_BYTES);
    let mut slots = Vec::new();
    while let Some((frame, slot)) = queue.recv().await {
        batch.extend_from_slice(&frame);
        slots.push(slot);
        while batch.len() < WRITE_BATCH_BYTES {
            match queue.try_recv() {
                Ok((frame, slot)) => {
                    batch.extend_from_slice(&frame);
                    slots.push(slot);
                }
                Err(_) => break,
            }
        }
        // With TLS, bytes written may wait in the TLS layer until flushed: flushed at once.
        let written = async {
            socket.write_all(&batch).await?;
            socket.flush().await
        };
        match tokio::time::timeout(timeout, written).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "write failed");
                return;
            }
            Err(_) => {
                tracing::warn!(%peer, ?timeout, "the acquirer reads no responses: closing (limits.write_timeout_seconds)");
                return;
            }
        }
        batch.clear();
        // Frees the slots of the responses just written.
        slots.clear();
    }
    let _ = tokio::time::timeout(timeout, socket.shutdown()).await;
}

struct Reader<'a> {
    context: &'a SessionContext,
    responder: Responder,
    reply_to: ReplyTo,
    slots: Arc<Semaphore>,
    peer: SocketAddr,
    /// The acquirer this connection speaks for, from its first financial request, with the
    /// connection permit it holds against `acquirers.connections_max`.
    bound: std::sync::Mutex<Option<Bound>>,
    /// The acquirer this connection is bound to by its client certificate
    /// (`acquirers.client_cert_cn`), or else by its source address (`acquirers.sources`).
    by_source: Option<u64>,
    /// The subject common name of the client certificate (mutual TLS).
    certificate: Option<String>,
}

/// The acquirer a connection speaks for, its place among the acquirer's connections, and its
/// count in `switch_acquirer_connections`, given back when the connection ends.
#[derive(Debug)]
struct Bound {
    acquirer: u64,
    _permit: OwnedSemaphorePermit,
    gauge: prometheus::IntGauge,
}

impl Drop for Bound {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// What binding a request's acquirer to the connection found.
enum Binding {
    Same,
    Other(u64),
    Full(usize),
}

impl Reader<'_> {
    async fn read_loop<R: AsyncRead + Unpin>(&self, mut socket: R) -> Close {
        let context = self.context;
        let mut buffer = BytesMut::with_capacity(READ_CHUNK_BYTES);
        let mut shutdown = context.shutdown.clone();
        let idle = Duration::from_secs(context.limits.idle_timeout_seconds);
        loop {
            // Every complete frame already buffered, before reading more (or stopping).
            loop {
                let bounds = match context.framing.parse(&buffer, context.max_frame_bytes) {
                    Err(error) => return Close::Framing(error),
                    Ok(None) => break,
                    Ok(Some(bounds)) => bounds,
                };
                if bounds.is_keep_alive() {
                    buffer.advance(bounds.total_len());
                    continue;
                }
                if self.responder.writer.is_closed() {
                    return Close::WriteTimeout(self.write_timeout());
                }
                // Not interrupted by shutdown: a frame taken off the socket is answered. Slots
                // come back as the pipeline answers; the server's drain limit bounds the wait.
                let Ok(slot) = self.slots.clone().acquire_owned().await else {
                    return Close::Shutdown;
                };
                // Slots also come back when the writer gives up on the peer: then nothing more
                // may enter the pipeline, since its answer could not be written.
                if self.responder.writer.is_closed() {
                    return Close::WriteTimeout(self.write_timeout());
                }
                // Decoded in place; a request that enters the pipeline takes a copy of its
                // message (one small allocation), so that the read buffer is reused: a frame
                // sharing it would keep its 16 KiB alive until answered.
                let handled =
                    self.handle_frame(&buffer[bounds.header_len..bounds.total_len()], slot);
                buffer.advance(bounds.total_len());
                if let Err(close) = handled {
                    return close;
                }
            }
            if *shutdown.borrow() {
                return Close::Shutdown;
            }
            buffer.reserve(READ_CHUNK_BYTES);
            let read = tokio::select! {
                read = tokio::time::timeout(idle, socket.read_buf(&mut buffer)) => read,
                _ = shutdown.changed() => return Close::Shutdown,
                () = self.responder.writer.closed() => return Close::WriteTimeout(self.write_timeout()),
            };
            match read {
                Err(_) => return Close::Idle(idle),
                Ok(Ok(0)) if buffer.is_empty() => return Close::PeerClosed,
                Ok(Ok(0)) => return Close::PeerClosedMidFrame(buffer.len()),
                Ok(Ok(_)) => {}
                // A TLS peer that closes the TCP connection without close_notify, as many
                // ISO 8583 stacks do: a close like any other.
                Ok(Err(error)) if error.kind() == io::ErrorKind::UnexpectedEof => {
                    return if buffer.is_empty() {
                        Close::PeerClosed
                    } else {
                        Close::PeerClosedMidFrame(buffer.len())
                    };
                }
                Ok(Err(error)) => return Close::Io(error),
            }
        }
    }

    fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.context.limits.write_timeout_seconds)
    }

    fn handle_frame(&self, body: &[u8], slot: OwnedSemaphorePermit) -> Result<(), Close> {
        let received = Instant::now();
        match self.context.dialect.decode_partial(body) {
            PartialDecode::Complete(message) => self.handle_message(&message, body, slot, received),
            PartialDecode::Malformed { message, error } => {
                tracing::warn!(peer = %self.peer, mti = %message.mti, %error, "malformed request");
                if message.has(11)
                    && let Some(response) =
                        iso::response(&message, &Outcome::decline(ResponseCode::FormatError))
                    && self.responder.send(&response, slot)
                {
                    metrics().count(&message.mti.0, ResponseCode::FormatError, Route::None);
                    return Ok(());
                }
                Err(Close::Unreadable(error.to_string()))
            }
            PartialDecode::Unreadable(error) => Err(Close::Unreadable(error.to_string())),
        }
    }

    /// Answers a request that never entered the pipeline.
    fn respond(&self, request: &Message<'_>, outcome: Outcome, slot: OwnedSemaphorePermit) {
        if let Some(response) = iso::response(request, &outcome) {
            self.responder.send(&response, slot);
            metrics().count(&request.mti.0, outcome.code, Route::None);
            if iso::classify(request.mti) == Class::Financial
                && let Some(key) = iso::identity(request)
            {
                log_decline(&request.mti.0, key.stan, outcome.code, None, None);
                let amount = request
                    .get(4)
                    .and_then(|a| std::str::from_utf8(a).ok())
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(0);
                self.context.journal.record(
                    self.context.journal_part,
                    Decision {
                        at_seconds: unix_seconds(),
                        key,
                        rrn: rrn(request),
                        card: None,
                        mti: request.mti.0,
                        amount,
                        code: outcome.code,
                        route: Route::None,
                        rule: None,
                        via: None,
                    },
                );
            }
        }
    }

    fn handle_message(
        &self,
        message: &Message<'_>,
        body: &[u8],
        slot: OwnedSemaphorePermit,
        received: Instant,
    ) -> Result<(), Close> {
        match iso::classify(message.mti) {
            Class::NetworkManagement => {
                let code = self.network_management(message);
                self.respond(message, Outcome::decline(code), slot);
            }
            Class::Unsupported => self.respond(
                message,
                Outcome::decline(ResponseCode::InvalidTransaction),
                slot,
            ),
            Class::NotARequest => {
                tracing::warn!(peer = %self.peer, mti = %message.mti, "ignored a message that is not a request");
            }
            Class::Financial => return self.financial(message, body, slot, received),
        }
        Ok(())
    }

    /// Binds the connection to `acquirer` on its first financial request, taking one of the
    /// acquirer's connection permits.
    fn bind(&self, acquirer: u64) -> Binding {
        // Only this connection's reader takes the lock: never contended.
        let mut bound = self
            .bound
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*bound {
            Some(bound) if bound.acquirer == acquirer => Binding::Same,
            Some(bound) => Binding::Other(bound.acquirer),
            None => {
                let Some(permits) = self.context.acquirer_connections.get(&acquirer) else {
                    return Binding::Same;
                };
                match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let gauge = metrics().connections(acquirer);
                        gauge.inc();
                        *bound = Some(Bound {
                            acquirer,
                            _permit: permit,
                            gauge,
                        });
                        Binding::Same
                    }
                    Err(_) => Binding::Full(
                        self.context
                            .acquirers
                            .get(&acquirer)
                            .map_or(0, |a| a.connections_max),
                    ),
                }
            }
        }
    }

    /// Answers an identical retransmission of a request still being decided once that decision
    /// arrives (or with 91 after `limits.retransmission_wait_seconds`).
    fn answer_when_decided(
        &self,
        body: &[u8],
        decided: tokio::sync::oneshot::Receiver<Outcome>,
        slot: OwnedSemaphorePermit,
    ) {
        let responder = self.responder.clone();
        let frame = Bytes::copy_from_slice(body);
        let wait = Duration::from_secs(self.context.limits.retransmission_wait_seconds);
        let peer = self.peer;
        actix::spawn(async move {
            let outcome = match tokio::time::timeout(wait, decided).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(_)) | Err(_) => {
                    tracing::warn!(%peer, ?wait, "a retransmission's original was not decided in time: answered 91");
                    Outcome::decline(ResponseCode::IssuerUnavailable)
                }
            };
            match responder.dialect.decode(&frame) {
                Ok(request) => {
                    if let Some(response) = iso::response(&request, &outcome) {
                        responder.send(&response, slot);
                        metrics().count(&request.mti.0, outcome.code, Route::None);
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "a request that decoded once no longer decodes")
                }
            }
        });
    }

    fn network_management(&self, message: &Message<'_>) -> ResponseCode {
        let code = match message.get(70) {
            Some(b"001") => "sign-on",
            Some(b"002") => "sign-off",
            Some(b"201") => "cutover",
            Some(b"301") => return ResponseCode::Approved,
            Some(_) => return ResponseCode::InvalidTransaction,
            None => return ResponseCode::FormatError,
        };
        tracing::info!(peer = %self.peer, "network management: {code}");
        ResponseCode::Approved
    }

    fn financial(
        &self,
        message: &Message<'_>,
        body: &[u8],
        slot: OwnedSemaphorePermit,
        received: Instant,
    ) -> Result<(), Close> {
        let context = self.context;
        let Some(identity) = iso::identity(message) else {
            self.respond(message, Outcome::decline(ResponseCode::FormatError), slot);
            return Ok(());
        };
        let Some(acquirer) = context.acquirers.get(&identity.acquirer) else {
            tracing::warn!(peer = %self.peer, acquirer = identity.acquirer, "request from an unknown acquirer");
            self.respond(
                message,
                Outcome::decline(ResponseCode::NotPermittedToTerminal),
                slot,
            );
            return Ok(());
        };
        // DESIGN 2.6: a connection bound by its certificate or its source speaks for that
        // acquirer alone, and an acquirer with a certificate or sources is spoken for by no
        // other connection.
        let certified = acquirer
            .client_cert_cn
            .as_ref()
            .is_none_or(|cn| self.certificate.as_ref() == Some(cn));
        if !certified
            || !acquirer.admits(self.peer.ip())
            || self.by_source.is_some_and(|by| by != acquirer.id)
        {
            tracing::warn!(peer = %self.peer, named = identity.acquirer, bound = ?self.by_source, certificate = self.certificate.as_deref(), "request naming an acquirer this connection may not speak for: 58");
            self.respond(
                message,
                Outcome::decline(ResponseCode::NotPermittedToTerminal),
                slot,
            );
            return Ok(());
        }
        // Before binding: a request without a correct MAC takes no connection permit.
        if let Some(key) = &acquirer.mac_key
            && !mac_correct(key, message, body)
        {
            tracing::warn!(peer = %self.peer, acquirer = identity.acquirer, stan = identity.stan, "request without a correct MAC: 63");
            self.respond(
                message,
                Outcome::decline(ResponseCode::SecurityViolation),
                slot,
            );
            return Ok(());
        }
        let binding = self.bind(identity.acquirer);
        // Bound to this acquirer (or refused for its connection limit, the last answer here):
        // its responses are signed from now on. Set once: a connection never changes acquirer.
        if let Some(key) = &acquirer.mac_key
            && !matches!(binding, Binding::Other(_))
            && self.responder.mac.get().is_none()
        {
            let _ = self.responder.mac.set(key.clone());
        }
        match binding {
            Binding::Same => {}
            Binding::Other(bound) => {
                tracing::warn!(peer = %self.peer, bound, named = identity.acquirer, "request naming another acquirer than the connection's: 58");
                self.respond(
                    message,
                    Outcome::decline(ResponseCode::NotPermittedToTerminal),
                    slot,
                );
                return Ok(());
            }
            Binding::Full(limit) => {
                self.respond(
                    message,
                    Outcome::decline(ResponseCode::IssuerUnavailable),
                    slot,
                );
                return Err(Close::AcquirerConnections {
                    acquirer: identity.acquirer,
                    limit,
                });
            }
        }
        let fingerprint = iso::fingerprint(message, &context.fingerprint_key);
        match context.idempotency.begin(identity, fingerprint) {
            Begin::Replay(outcome) => self.respond(message, outcome, slot),
            Begin::Conflict => self.respond(
                message,
                Outcome::decline(ResponseCode::DuplicateTransmission),
                slot,
            ),
            Begin::Full => self.respond(
                message,
                Outcome::decline(ResponseCode::SystemMalfunction),
                slot,
            ),
            Begin::TooManyWaiting => self.respond(
                message,
                Outcome::decline(ResponseCode::IssuerUnavailable),
                slot,
            ),
            Begin::InFlight(decided) => {
                tracing::info!(peer = %self.peer, stan = identity.stan, "retransmission of a request still being decided: waits for its answer");
                self.answer_when_decided(body, decided, slot);
            }
            Begin::New => match iso::parse_request(message, iso::today_utc(), &context.tokenizer) {
                Err(code) => {
                    let outcome = Outcome::decline(code);
                    context.idempotency.finish(&identity, outcome);
                    self.respond(message, outcome, slot);
                }
                Ok(request) => {
                    // The acquirer's requests being decided, over all its connections.
                    let acquirer_slot = match context.acquirer_inflight.get(&identity.acquirer) {
                        None => None,
                        Some(permits) => match permits.clone().try_acquire_owned() {
                            Ok(permit) => Some(permit),
                            Err(_) => {
                                tracing::debug!(peer = %self.peer, acquirer = identity.acquirer, "acquirer at its acquirers.inflight_max: 91");
                                let outcome = Outcome::decline(ResponseCode::IssuerUnavailable);
                                context.idempotency.abandon(&identity, outcome);
                                self.respond(message, outcome, slot);
                                return Ok(());
                            }
                        },
                    };
                    let transaction = Transaction {
                        request,
                        frame: Bytes::copy_from_slice(body),
                        identity,
                        fingerprint,
                        reply_to: self.reply_to.clone(),
                        permit: slot,
                        received,
                        route: Route::None,
                        logged: None,
                        velocity: crate::risk::Passed::default(),
                        rule: None,
                        flag: None,
                        acquirer_slot,
                        via: None,
                        guard: crate::pipeline::Unanswered::new(
                            self.reply_to.session.clone(),
                            identity,
                        ),
                    };
                    metrics().observe(Stage::Admission, received.elapsed());
                    metrics().inflight.inc();
                    context.dispatcher.dispatch(transaction);
                }
            },
        }
        Ok(())
    }
}

/// Whether `message` (decoded from `body`) ends in its MAC field, correct for `key`: field 64,
/// or 128 when a secondary bitmap is present, as the last field.
fn mac_correct(key: &MacKey, message: &Message<'_>, body: &[u8]) -> bool {
    match message.fields().last() {
        Some((64 | 128, value)) => mac::verify(key, body, value),
        _ => false,
    }
}
