//! The `/metrics` HTTP server: GET /metrics only, bounded, off the daemon's event loop.
//!
//! hyper's HTTP/1 server on a listener the daemon bound. Each connection is a task of its own with
//! a deadline; at most [`MAX_CONNECTIONS`] are served at once (more are closed at once); request
//! heads are read into a buffer of at most [`REQUEST_MAX`] bytes (a larger head is refused by
//! hyper), and no request body is ever read. `GET` (and `HEAD`) of `/metrics` answer with the
//! exposition, rendered in the connection's task from the shared registry; any other method on
//! `/metrics` is 405, any other path 404. A scraper that asks for OpenMetrics gets it; everyone
//! else gets the Prometheus text format.

use crate::Metrics;
use crate::text::{OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Connections served at once at most.
pub const MAX_CONNECTIONS: usize = 16;

/// The largest request head read (hyper's smallest allowed buffer).
pub const REQUEST_MAX: usize = 8192;

/// A connection is closed after this long, answered or not.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);

/// Serves `metrics` on `listener` until `stop` is cancelled.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, stop: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait a little rather than spin.
                tracing::warn!("metrics listener: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tracing::debug!("metrics listener: too many connections; one closed");
            continue;
        };
        let metrics = Arc::clone(&metrics);
        let stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req| {
                let metrics = Arc::clone(&metrics);
                async move { Ok::<_, Infallible>(respond(&metrics, &req)) }
            });
            let connection =
                http1::Builder::new().max_buf_size(REQUEST_MAX).serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                () = stop.cancelled() => {}
                _ = tokio::time::timeout(CONNECTION_DEADLINE, connection) => {}
            }
        });
    }
}

fn now_unix_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

fn respond(metrics: &Metrics, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return plain(StatusCode::NOT_FOUND, "not found: Macha serves only /metrics\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let openmetrics = req
        .headers()
        .get(ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let now = now_unix_secs();
    let (body, content_type) = if openmetrics {
        (metrics.render_openmetrics(now), OPENMETRICS_CONTENT_TYPE)
    } else {
        (metrics.render_text(now), TEXT_CONTENT_TYPE)
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}
