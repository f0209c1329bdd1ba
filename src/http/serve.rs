//! Accepting connections. axum's own `serve` has no header read timeout and
//! no connection cap, so slow or silent clients could hold sockets (and
//! file descriptors) forever; this loop drives hyper's HTTP/1 server
//! directly with both:
//!
//! - a header read timeout, which hyper also runs while a keep-alive
//!   connection waits for its next request: a client that sends nothing,
//!   or sends headers too slowly, is closed after it;
//! - at most `max_connections` open connections; further clients wait in
//!   the kernel's accept backlog until one closes (a WebSocket leaves the
//!   count when it upgrades: WebSockets have caps of their own);
//! - at most `per_address` open connections from one client address:
//!   further ones are closed at once, so one address cannot fill the
//!   connection cap and keep everyone else in the backlog;
//! - a first-byte timeout, shorter than the header timeout: a connection
//!   that sends nothing at all is closed sooner, before hyper is involved;
//! - at most [`UNSENT_BYTES`] written but not yet sent per socket
//!   (`TCP_NOTSENT_LOWAT`): a client that stops reading blocks the writer
//!   after a few kilobytes instead of letting the kernel take megabytes
//!   (the WebSocket of a partner that never reads would otherwise have
//!   every one of its subscriptions render hundreds of events into a 4 MB
//!   send buffer, on the writers' cores). What is in flight is not limited,
//!   so throughput to a client that reads is unchanged.
//!
//! On shutdown it stops accepting and asks every connection to finish its
//! request in flight and close; it returns when all have.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::places::Places;

/// Unsent bytes a socket may hold before writes to it wait.
pub const UNSENT_BYTES: u32 = 16 * 1024;

/// How the listener treats connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub max_connections: usize,
    /// Per client address; 0 = no cap.
    pub per_address: usize,
}

/// Serves `router` until `stop` is cancelled and every connection closed.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, stop: CancellationToken) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let addresses: Places<IpAddr> = Places::new(limits.per_address, 0);
    let first_byte = limits.first_byte_timeout.min(limits.header_timeout);
    let connections = TaskTracker::new();
    let mut make = router.into_make_service_with_connect_info::<SocketAddr>();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off
                    // rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let Ok(place) = addresses.take(peer.ip()) else {
            tracing::debug!(%peer, "too many connections from one address; closed");
            continue;
        };
        let svc = match make.call(peer).await {
            Ok(svc) => svc,
            Err(never) => match never {},
        };
        let stop = stop.clone();
        connections.spawn(async move {
            let (_permit, _place) = (permit, place);
            let _ = stream.set_nodelay(true);
            let _ = socket2::SockRef::from(&stream).set_tcp_notsent_lowat(UNSENT_BYTES);
            let mut first = [0u8; 1];
            match tokio::time::timeout(first_byte, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let hyper_svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                svc.clone().call(req)
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), hyper_svc)
                .with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    connections.close();
    connections.wait().await;
}
