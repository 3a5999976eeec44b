//! `/metrics` and `/healthz` over plain HTTP. The body is rendered by the check loop; a
//! scrape only copies it, so scrapes never touch storage or Elasticsearch.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// What the server hands out: the last rendered metrics and when the loop last finished.
#[derive(Clone)]
pub struct Published {
    inner: Arc<RwLock<(String, Option<Instant>)>>,
    /// The loop counts as alive while its last check is younger than this.
    stale_after: Duration,
}

impl Published {
    pub fn new(stale_after: Duration) -> Published {
        Published {
            inner: Arc::default(),
            stale_after,
        }
    }

    pub fn set(&self, metrics: String) {
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = (metrics, Some(Instant::now()));
    }

    fn respond(&self, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let (metrics, last) = self.inner.read().unwrap_or_else(|p| p.into_inner()).clone();
        let fresh = last.is_some_and(|t| t.elapsed() < self.stale_after);
        let (status, content_type, body) = match (req.method(), req.uri().path()) {
            (&Method::GET, "/metrics") if last.is_some() => {
                (StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", metrics)
            }
            (&Method::GET, "/metrics") => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "first check running\n".into(),
            ),
            (&Method::GET, "/healthz") if fresh => (StatusCode::OK, "text/plain", "ok\n".into()),
            (&Method::GET, "/healthz") => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "the check loop has not finished a check recently\n".into(),
            ),
            _ => (StatusCode::NOT_FOUND, "text/plain", "try /metrics or /healthz\n".into()),
        };
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        if let Ok(v) = content_type.parse() {
            resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        resp
    }
}

/// Serves until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, published: Published) {
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            continue;
        };
        let published = published.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let resp = published.respond(&req);
                async move { Ok::<_, std::convert::Infallible>(resp) }
            });
            let _ = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
