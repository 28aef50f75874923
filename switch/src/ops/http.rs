//! The HTTP listener: `GET /healthz` (the process answers) and `GET /readyz` (the ledger is
//! loaded and acquirers are being accepted; false again while shutting down). Metrics and the
//! admin API under `/v1/` join here in later releases.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context as _;

use crate::ops::admin::AdminState;

#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// The Prometheus text format.
async fn prometheus_metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::ops::metrics::metrics().render())
}

async fn readyz(health: web::Data<Health>) -> HttpResponse {
    if health.is_ready() {
        HttpResponse::Ok()
            .content_type("text/plain")
            .body("ready\n")
    } else {
        HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body("not ready\n")
    }
}

/// Binds the HTTP listener and starts serving on the current actix system.
pub fn start(
    addr: SocketAddr,
    health: Arc<Health>,
    admin: Arc<AdminState>,
) -> anyhow::Result<(ServerHandle, SocketAddr)> {
    let data = web::Data::from(health);
    let admin = web::Data::from(admin);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(admin.clone())
            .configure(crate::ops::admin::configure)
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(prometheus_metrics))
    })
    // Health checks, scrapes and admin calls are few: one worker thread; the switch handles
    // the signals.
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .bind(addr)
    .with_context(|| format!("cannot listen for HTTP on {addr} (listeners.http)"))?;
    let bound = server.addrs().first().copied().unwrap_or(addr);
    let server = server.run();
    let handle = server.handle();
    actix::spawn(server);
    Ok((handle, bound))
}
