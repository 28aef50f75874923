//! The reference echo server: every frame goes back as it came, on the same framing, so a run
//! against it measures the loopback ceiling of the workload.

use std::net::SocketAddr;
use std::time::Duration;

use adapters::FrameHeader;
use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Largest frame echoed; the switch's default maximum.
pub const MAX_FRAME_BYTES: usize = 8192;

/// Binds the echo server; returns its address and the future that serves until `duration`.
pub async fn bind(
    listen: SocketAddr,
    framing: FrameHeader,
    duration: Duration,
) -> anyhow::Result<(SocketAddr, impl Future<Output = ()>)> {
    if !listen.ip().is_loopback() {
        bail!("--listen {listen} is not a loopback address");
    }
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let serve = async move {
        let accept = async {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(echo_connection(stream, framing));
            }
        };
        tokio::select! {
            () = accept => {}
            () = tokio::time::sleep(duration) => {}
        }
    };
    Ok((addr, serve))
}

async fn echo_connection(mut stream: tokio::net::TcpStream, framing: FrameHeader) {
    let _ = stream.set_nodelay(true);
    let mut buffer = Vec::with_capacity(65_536);
    let mut chunk = vec![0u8; 65_536];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buffer.extend_from_slice(&chunk[..n]);
        let mut end = 0;
        loop {
            match framing.parse(&buffer[end..], MAX_FRAME_BYTES) {
                Ok(Some(bounds)) => end += bounds.total_len(),
                Ok(None) => break,
                Err(_) => return,
            }
        }
        if end > 0 {
            if stream.write_all(&buffer[..end]).await.is_err() {
                return;
            }
            buffer.drain(..end);
        }
    }
}
