//! The operator's listener (`metrics_listen`): `GET /metrics`, `/healthz`,
//! `/readyz` over plain HTTP/1 (hyper).
//!
//! It is meant for a private network or loopback, but it is still bounded:
//! at most [`MAX_CONNECTIONS`] scrapers at once (more wait in the kernel's
//! backlog), each given [`TIMEOUT`] to send its request and read the answer.
//! Only `GET` and `HEAD` of the three paths are answered; anything else gets
//! 404 or 405.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// Scrapers served at once.
pub const MAX_CONNECTIONS: usize = 32;
/// How long one scraper connection may take in all.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The OpenMetrics text content type (what `prometheus-client` writes).
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic Prometheus text content type.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

type ReadyFn = dyn Fn() -> Result<(), String> + Send + Sync;
type RefreshFn = dyn Fn() + Send + Sync;

/// What the listener serves: a registry, a readiness check and hooks that
/// refresh sampled gauges just before a scrape.
pub struct Endpoint {
    registry: Registry,
    ready_gauge: prometheus_client::metrics::gauge::Gauge,
    ready: Box<ReadyFn>,
    refresh: Vec<Box<RefreshFn>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Serves `registry`; `/readyz` answers 200 when `ready` is `Ok`, else
    /// 503 with its reason. The same verdict is the gauge `ringside_ready`
    /// (1 or 0) in every scrape, so alerts need no prober.
    pub fn new(
        mut registry: Registry,
        ready: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        let ready_gauge = prometheus_client::metrics::gauge::Gauge::default();
        registry.register(
            "ringside_ready",
            "1 while /readyz answers 200 (relay: linked to the origin, not draining; origin: log replayed, listening)",
            ready_gauge.clone(),
        );
        Endpoint {
            registry,
            ready_gauge,
            ready: Box::new(ready),
            refresh: Vec::new(),
        }
    }

    /// Runs `f` before every scrape (to sample gauges that are not kept up
    /// to date on the hot path, such as QUIC path statistics).
    pub fn on_scrape(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.refresh.push(Box::new(f));
        self
    }

    /// The exposition text, as `/metrics` serves it.
    pub fn scrape(&self) -> String {
        for f in &self.refresh {
            f();
        }
        self.ready_gauge.set(i64::from(self.ready().is_ok()));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The readiness verdict, as `/readyz` serves it.
    pub fn ready(&self) -> Result<(), String> {
        (self.ready)()
    }

    fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
        }
        match req.uri().path() {
            "/metrics" => {
                // Prometheus asks for OpenMetrics; anyone else gets the
                // classic text format.
                let openmetrics = (req.headers().get_all(ACCEPT).iter())
                    .filter_map(|v| v.to_str().ok())
                    .any(|v| v.contains("application/openmetrics-text"));
                let (body, kind) = if openmetrics {
                    (self.scrape(), CONTENT_TYPE_OPENMETRICS)
                } else {
                    (
                        crate::text::from_openmetrics(&self.scrape()),
                        CONTENT_TYPE_TEXT,
                    )
                };
                let mut resp = Response::new(Full::new(Bytes::from(body)));
                resp.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
                resp
            }
            "/healthz" => plain(StatusCode::OK, "ok\n".into()),
            "/readyz" => match self.ready() {
                Ok(()) => plain(StatusCode::OK, "ready\n".into()),
                Err(why) => plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {why}\n"),
                ),
            },
            _ => plain(
                StatusCode::NOT_FOUND,
                "try /metrics, /healthz or /readyz\n".into(),
            ),
        }
    }
}

fn plain(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// A running listener; dropping it stops it.
#[derive(Debug)]
pub struct Listener {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Listener {
    /// Binds `addr` and serves `endpoint` until dropped.
    pub async fn bind(addr: SocketAddr, endpoint: Arc<Endpoint>) -> std::io::Result<Listener> {
        let socket = TcpListener::bind(addr).await?;
        let addr = socket.local_addr()?;
        let task = tokio::spawn(accept_loop(socket, endpoint));
        tracing::info!(%addr, "metrics, /healthz and /readyz listening");
        Ok(Listener { addr, task })
    }

    /// The address it listens on (the port, when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(socket: TcpListener, endpoint: Arc<Endpoint>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // Waiting for a slot before accepting leaves extra scrapers in the
        // kernel's backlog instead of in our memory.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match socket.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "metrics accept failed");
                continue;
            }
        };
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req: Request<Incoming>| {
                let resp = endpoint.answer(&req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(TIMEOUT, conn).await {
                Ok(Err(e)) => tracing::debug!(error = %e, "metrics connection failed"),
                Err(_) => tracing::debug!("metrics connection timed out"),
                Ok(Ok(())) => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        get_accepting(addr, path, "*/*").await
    }

    async fn get_accepting(addr: SocketAddr, path: &str, accept: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!(
            "GET {path} HTTP/1.1\r\nhost: x\r\naccept: {accept}\r\nconnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness() {
        let mut registry = Registry::default();
        let c = Counter::<u64>::default();
        registry.register("ringside_test_things", "Things", c.clone());
        c.inc_by(3);
        let ready = Arc::new(AtomicBool::new(false));
        let r = ready.clone();
        let endpoint = Endpoint::new(registry, move || {
            if r.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err("log not replayed".into())
            }
        });
        let l = Listener::bind("127.0.0.1:0".parse().expect("addr"), Arc::new(endpoint))
            .await
            .expect("bind");
        let prom = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
        let m = get_accepting(l.local_addr(), "/metrics", prom).await;
        assert!(m.starts_with("HTTP/1.1 200"), "{m}");
        assert!(m.contains("application/openmetrics-text"), "{m}");
        assert!(m.contains("ringside_test_things_total 3"), "{m}");
        assert!(m.contains("# EOF"), "{m}");
        let plain = get(l.local_addr(), "/metrics").await;
        assert!(plain.contains("text/plain; version=0.0.4"), "{plain}");
        assert!(
            plain.contains("# TYPE ringside_test_things_total counter"),
            "{plain}"
        );
        assert!(!plain.contains("# EOF"), "{plain}");
        assert!(plain.contains("ringside_ready 0"), "{plain}");
        assert!(get(l.local_addr(), "/healthz")
            .await
            .starts_with("HTTP/1.1 200"));
        let not = get(l.local_addr(), "/readyz").await;
        assert!(
            not.starts_with("HTTP/1.1 503") && not.contains("log not replayed"),
            "{not}"
        );
        ready.store(true, Ordering::Relaxed);
        assert!(get(l.local_addr(), "/readyz")
            .await
            .starts_with("HTTP/1.1 200"));
        assert!(get(l.local_addr(), "/nope")
            .await
            .starts_with("HTTP/1.1 404"));
    }
}
