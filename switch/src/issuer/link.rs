//! One issuer link's task: connect (with a timeout), hand the channel a way to write and to
//! close, pass it every frame read, and after a failure or a close wait an exponential
//! backoff with jitter before connecting again. Runs on the channel's arbiter until the
//! channel stops it.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};

use super::IssuerSettings;
use crate::limits::{ISSUER_MESSAGE_BYTES_MAX, READ_CHUNK_BYTES, WRITE_BATCH_BYTES};

/// What a link tells its channel. `generation` tells a link's connections apart, so that a
/// late event of a closed connection is not taken for the current one's.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub enum LinkEvent {
    /// Connected: frames written to `writer` go out; dropping `close` closes the connection.
    Up {
        slot: usize,
        generation: u64,
        writer: mpsc::Sender<Vec<u8>>,
        close: oneshot::Sender<()>,
    },
    /// Frames read (keep-alives left out), in order.
    Frames {
        slot: usize,
        generation: u64,
        frames: Vec<Bytes>,
    },
    /// The connection ended, or could not be made.
    Down {
        slot: usize,
        generation: u64,
        reason: String,
    },
}

/// The wait before reconnecting after `failures` failures in a row: `backoff_min` doubled per
/// failure up to `backoff_max`, then between half and all of it (jitter, so that links do not
/// reconnect in step), from `seed`.
pub fn backoff(settings: &IssuerSettings, failures: u32, seed: u64) -> Duration {
    let min = settings.backoff_min.as_millis().max(1);
    let max = settings.backoff_max.as_millis().max(min);
    let full = min.saturating_mul(1u128 << failures.min(30)).min(max);
    let half = full / 2;
    let jitter = u128::from(seed) % (full - half + 1);
    Duration::from_millis(u64::try_from(half + jitter).unwrap_or(u64::MAX))
}

/// A cheap pseudo-random sequence for jitter (xorshift64*), seeded per link.
fn next_seed(seed: &mut u64) -> u64 {
    let mut x = *seed | 1;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *seed = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// Runs link `slot` of an issuer until `stop` turns true.
pub async fn run(
    slot: usize,
    settings: Arc<IssuerSettings>,
    tls: Option<super::tls::Client>,
    events: Recipient<LinkEvent>,
    mut stop: watch::Receiver<bool>,
) {
    let mut seed = {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::hash::RandomState::new().build_hasher();
        h.write_usize(slot);
        h.finish()
    };
    let mut failures = 0u32;
    let mut generation = 0u64;
    loop {
        if *stop.borrow() {
            return;
        }
        generation += 1;
        let connect = tokio::time::timeout(
            settings.connect_timeout,
            TcpStream::connect(settings.address),
        );
        let reason = tokio::select! {
            connected = connect => match connected {
                Ok(Ok(stream)) => {
                    // Only a connection that lasted starts the backoff over: an issuer that
                    // accepts and closes (or refuses the sign-on) is not redialled in a loop.
                    let connected = tokio::time::Instant::now();
                    let _ = stream.set_nodelay(true);
                    let reason = match &tls {
                        None => serve(slot, generation, stream, &settings, &events, &mut stop).await,
                        Some(client) => {
                            let handshake = client.connector.connect(client.server_name.clone(), stream);
                            match tokio::time::timeout(settings.connect_timeout, handshake).await {
                                Ok(Ok(stream)) => serve(slot, generation, stream, &settings, &events, &mut stop).await,
                                Ok(Err(error)) => format!("TLS handshake failed: {error}"),
                                Err(_) => format!("no TLS handshake within {:?}", settings.connect_timeout),
                            }
                        }
                    };
                    if connected.elapsed() >= settings.backoff_max.max(Duration::from_secs(10)) {
                        failures = 0;
                    }
                    reason
                }
                Ok(Err(error)) => format!("cannot connect: {error}"),
                Err(_) => format!("cannot connect within {:?}", settings.connect_timeout),
            },
            _ = stop.changed() => return,
        };
        failures = failures.saturating_add(1);
        events.do_send(LinkEvent::Down {
            slot,
            generation,
            reason,
        });
        let wait = backoff(&settings, failures - 1, next_seed(&mut seed));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

/// One connection, until it fails, the issuer closes it, the channel closes it or `stop`.
/// Returns why it ended.
async fn serve<S>(
    slot: usize,
    generation: u64,
    stream: S,
    settings: &IssuerSettings,
    events: &Recipient<LinkEvent>,
    stop: &mut watch::Receiver<bool>,
) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (frames_tx, mut frames_rx) = mpsc::channel::<Vec<u8>>(settings.inflight_max.max(16));
    let (close_tx, mut close_rx) = oneshot::channel::<()>();
    events.do_send(LinkEvent::Up {
        slot,
        generation,
        writer: frames_tx,
        close: close_tx,
    });
    let write = async move {
        let mut batch = Vec::with_capacity(WRITE_BATCH_BYTES);
        while let Some(frame) = frames_rx.recv().await {
            batch.extend_from_slice(&frame);
            while batch.len() < WRITE_BATCH_BYTES {
                match frames_rx.try_recv() {
                    Ok(frame) => batch.extend_from_slice(&frame),
                    Err(_) => break,
                }
            }
            if let Err(error) = writer.write_all(&batch).await {
                return format!("write failed: {error}");
            }
            batch.clear();
        }
        "closed by the switch".to_owned()
    };
    let read = async {
        let mut buffer = BytesMut::with_capacity(READ_CHUNK_BYTES);
        loop {
            match reader.read_buf(&mut buffer).await {
                Ok(0) => return "closed by the issuer".to_owned(),
                Err(error) => return format!("read failed: {error}"),
                Ok(_) => {}
            }
            let mut frames = Vec::new();
            loop {
                match settings.framing.parse(&buffer, ISSUER_MESSAGE_BYTES_MAX) {
                    Ok(Some(bounds)) => {
                        let frame = buffer.split_to(bounds.total_len()).freeze();
                        if !bounds.is_keep_alive() {
                            frames.push(frame.slice(bounds.header_len..));
                        }
                    }
                    Ok(None) => break,
                    Err(error) => return format!("unreadable frame: {error}"),
                }
            }
            if !frames.is_empty() {
                events.do_send(LinkEvent::Frames {
                    slot,
                    generation,
                    frames,
                });
            }
            if buffer.capacity() - buffer.len() < READ_CHUNK_BYTES / 4 {
                buffer.reserve(READ_CHUNK_BYTES);
            }
        }
    };
    tokio::select! {
        reason = write => reason,
        reason = read => reason,
        _ = &mut close_rx => "closed by the switch".to_owned(),
        _ = stop.changed() => "switch stopping".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> IssuerSettings {
        crate::config::Settings::embedded()
            .unwrap()
            .issuers
            .into_iter()
            .next()
            .unwrap()
    }

    #[test]
    fn backoff_doubles_up_to_its_maximum_with_jitter_below_it() {
        let mut s = settings();
        s.backoff_min = Duration::from_millis(100);
        s.backoff_max = Duration::from_secs(5);
        let mut seed = 1;
        for failures in 0..40 {
            let full = (100u64 << failures.min(30)).min(5_000);
            for _ in 0..50 {
                let wait =
                    u64::try_from(backoff(&s, failures, next_seed(&mut seed)).as_millis()).unwrap();
                assert!(
                    (full / 2..=full).contains(&wait),
                    "{failures} failures: {wait} ms outside {}..={full}",
                    full / 2
                );
            }
        }
    }
}
