//! The acquirer listener: the socket bound at start and listening once the switch can answer,
//! and the accept loop that hands each connection to a worker's session.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::session::{self, SessionContext};

/// A socket bound to `addr` (so the port is ours), not yet listening: a port in use fails the
/// start at once, while acquirers are not accepted (they fail over) until recovery is done.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpSocket> {
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

/// Why the accept loop ended.
#[derive(Debug)]
pub enum Ended {
    /// SIGTERM, SIGINT or the caller's stop.
    Stopped,
    /// The WAL failed: this is why.
    Failed(String),
}

/// Accepts connections until `stop` resolves or a fatal error arrives, handing each to the
/// next worker's session in turn; `connections` bounds them (`limits.connections_max`).
pub async fn accept_loop(
    listener: &TcpListener,
    workers: &[(ArbiterHandle, SessionContext)],
    connections: &Arc<Semaphore>,
    stop: impl Future<Output = ()>,
    fatal: &mut mpsc::UnboundedReceiver<String>,
) -> Ended {
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
            () = &mut stop => return Ended::Stopped,
            Some(error) = fatal.recv() => return Ended::Failed(error),
        };
        let Ok(slot) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection refused: limits.connections_max reached");
            continue;
        };
        let (handle, context) = &workers[next_worker % workers.len()];
        next_worker = next_worker.wrapping_add(1);
        if let Err(error) = hand_over(stream, peer, handle, context.clone(), slot) {
            tracing::warn!(%peer, %error, "could not hand the connection to a worker");
        }
    }
}

/// Moves an accepted socket onto a worker arbiter and starts its session there.
fn hand_over(
    stream: TcpStream,
    peer: SocketAddr,
    worker: &ArbiterHandle,
    context: SessionContext,
    slot: OwnedSemaphorePermit,
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
