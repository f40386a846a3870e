//! The HTTP server both the exporter's API and `serve-replay` run on: hyper 1.x, HTTP/1.1
//! with upgrades, a connection cap that sheds idle connections before refusing, a header
//! deadline (which also bounds TLS handshakes and idle keep-alive connections), a head size
//! limit, an optional deadline on writes to a peer that stopped reading, and a drain deadline
//! at shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::web::limits::{
    ConnectionCap, Slot, DEFAULT_MAX_CONNECTIONS, MAX_HEAD_BYTES, MAX_READ_BUFFER,
};
use crate::web::metrics::HttpStats;
use crate::web::response::HttpResponse;
use crate::web::write_deadline::WriteDeadline;
use crate::web::Error;

/// Default time a client may take to send its request headers (`--web-header-timeout`).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for open connections to finish.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// What a connection past the cap reads before it is closed (plain HTTP only).
const REFUSED_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 32\r\nConnection: close\r\n\r\n{\"error\":\"too many connections\"}";

/// How [`serve`] treats connections.
pub struct ServeConfig {
    /// Deadline for request headers, which also bounds the TLS handshake and idle
    /// keep-alive connections (hyper restarts it whenever a connection waits for a request).
    pub header_timeout: Duration,
    /// The connection cap (and the counts).
    pub cap: ConnectionCap,
    /// TLS, when set.
    pub tls: Option<TlsAcceptor>,
    /// The socket send buffer of each connection (`None`: the kernel's autotuning, which
    /// lets a client that stops reading hold megabytes).
    pub send_buffer: Option<usize>,
    /// How long a write may wait for a peer that stopped reading before the connection is
    /// dropped (`None`: forever).
    pub write_timeout: Option<Duration>,
}

impl Default for ServeConfig {
    /// Plain HTTP, the default header timeout and connection cap.
    fn default() -> ServeConfig {
        ServeConfig {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            cap: ConnectionCap::new(
                DEFAULT_MAX_CONNECTIONS as usize,
                Arc::new(HttpStats::default()),
            ),
            tls: None,
            send_buffer: None,
            write_timeout: None,
        }
    }
}

/// Serves HTTP/1.1 (with upgrades) on `listener` with `handler` until `shutdown` is
/// cancelled, then drains open connections (with a deadline) and returns. At the cap, the
/// oldest connection that has not sent a request is closed to make room, and a newcomer is
/// closed at once only when there is none; the TLS handshake (if any) and request headers
/// must arrive within the header timeout.
pub async fn serve<H, F>(
    listener: TcpListener,
    config: ServeConfig,
    handler: H,
    shutdown: CancellationToken,
) -> io::Result<()>
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = HttpResponse> + Send + 'static,
{
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "Accept failed; continuing.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = config.cap.admit() else {
            if config.tls.is_none() {
                // Best effort on a fresh socket; never waits.
                let _ = stream.try_write(REFUSED_RESPONSE);
            }
            continue;
        };
        if let Some(bytes) = config.send_buffer {
            if let Err(e) = socket2::SockRef::from(&stream).set_send_buffer_size(bytes) {
                debug!(error = %e, %peer, "Could not set the send buffer.");
            }
        }
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        let tls = config.tls.clone();
        let timeouts = (config.header_timeout, config.write_timeout);
        let header_timeout = config.header_timeout;
        connections.spawn(async move {
            let Some(acceptor) = tls else {
                return serve_connection(stream, peer, handler, timeouts, shutdown, slot).await;
            };
            let handshake = tokio::select! {
                () = shutdown.cancelled() => return,
                () = slot.shed().cancelled() => return,
                handshake = tokio::time::timeout(header_timeout, acceptor.accept(stream)) => handshake,
            };
            match handshake {
                Ok(Ok(stream)) => {
                    serve_connection(stream, peer, handler, timeouts, shutdown, slot).await;
                }
                Ok(Err(e)) => debug!(error = %e, %peer, "TLS handshake failed."),
                Err(_) => debug!(%peer, "TLS handshake timed out."),
            }
        });
    }
    connections.close();
    if tokio::time::timeout(DRAIN_DEADLINE, connections.wait())
        .await
        .is_err()
    {
        warn!(
            open = connections.len(),
            "HTTP connections still open at the drain deadline; closing them."
        );
    }
    info!("HTTP server stopped.");
    Ok(())
}

/// Serves one connection until it ends (or a write waits longer than the write timeout); on
/// `shutdown`, finishes the request in flight; when shed (it had sent no request), closes at
/// once. `timeouts`: the header and write timeouts.
async fn serve_connection<IO, H, F>(
    io: IO,
    peer: SocketAddr,
    handler: H,
    (header_timeout, write_timeout): (Duration, Option<Duration>),
    shutdown: CancellationToken,
    slot: Slot,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = HttpResponse> + Send + 'static,
{
    let activity = slot.activity();
    let service = service_fn(move |req| {
        activity.requested();
        let response = handler(req);
        async move { Ok::<_, Infallible>(response.await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(MAX_READ_BUFFER)
        .serve_connection(TokioIo::new(WriteDeadline::new(io, write_timeout)), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = slot.shed().cancelled() => {
            debug!(%peer, "Closed an HTTP connection that had sent no request, to make room.");
            return;
        }
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        debug!(error = %e, %peer, "HTTP connection ended with an error.");
    }
}

/// Binds a TCP listener and returns it with the address it got (port 0 picks a free one).
pub async fn bind(listen: SocketAddr) -> Result<(TcpListener, SocketAddr), Error> {
    let bind_error = |source| Error::Bind {
        addr: listen.to_string(),
        source,
    };
    let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local))
}
