//! Serving the router over HTTP/1.1 with limits that only the connection layer can enforce: a
//! request head that has not fully arrived within the request timeout closes the connection, so
//! a client trickling header lines cannot hold a connection forever. (The body and the handler
//! are bounded by the timeout layer in [`crate::routes::router`].) On shutdown the listener
//! closes, requests in progress finish, and idle keep-alive connections are closed.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// Serve `app` on `listener` until `shutdown` completes, then wait for open requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send,
) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => break,
        };
        let (stream, _peer) = match accepted {
            Ok(connection) => connection,
            Err(err) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(cause = %err, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Answers go out at once rather than waiting to be merged with later writes.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(cause = %err, "cannot set TCP_NODELAY on a connection");
        }
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .keep_alive(true);
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(cause = %err, "connection ended with an error");
            }
        });
    }

    drop(listener);
    graceful.shutdown().await;
}
