//! The websocket server (tokio): streams every event to every client as the same JSON as
//! stdout, serves the live page (`/`), Prometheus metrics (`/metrics`) and health
//! (`/health`) on the same port.
//!
//! Each client has a bounded queue: publishing never waits for a client. A slow client
//! loses its own oldest events and is told so (`{"notice":"lagged","lost":N}`) before its
//! next event; other clients and the pipeline are unaffected. On shutdown every client
//! gets a close frame.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::config::SinksConfig;
use crate::error::SinkError;
use crate::event::Output;
use crate::metrics::Metrics;
use crate::sinks::Sink;

/// The live page.
pub(crate) const LIVE_PAGE: &str = include_str!("live.html");

struct Client {
    queue: Mutex<VecDeque<Arc<str>>>,
    lost: AtomicU64,
    notify: Notify,
}

/// Fan-out to websocket clients.
pub struct Hub {
    clients: Mutex<Vec<Arc<Client>>>,
    capacity: usize,
    closed: AtomicBool,
    metrics: Arc<Metrics>,
    /// Recent events, replayed to a client that connects (so the page has a history).
    recent: Mutex<VecDeque<Arc<str>>>,
}

/// Events replayed to a new client.
const REPLAY: usize = 200;

impl Hub {
    fn new(capacity: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            clients: Mutex::new(Vec::new()),
            capacity: capacity.max(1),
            closed: AtomicBool::new(false),
            metrics,
            recent: Mutex::new(VecDeque::with_capacity(REPLAY)),
        }
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `json` to every client without waiting.
    pub fn publish(&self, json: &str) {
        let msg: Arc<str> = json.into();
        {
            let mut r = Self::lock(&self.recent);
            if r.len() == REPLAY {
                r.pop_front();
            }
            r.push_back(msg.clone());
        }
        let mut lost = 0;
        for c in Self::lock(&self.clients).iter() {
            let mut q = Self::lock(&c.queue);
            if q.len() >= self.capacity {
                q.pop_front();
                c.lost.fetch_add(1, Ordering::Relaxed);
                lost += 1;
            }
            q.push_back(msg.clone());
            drop(q);
            c.notify.notify_one();
        }
        if lost > 0 {
            self.metrics.ws(self.client_count(), lost);
        }
    }

    /// Connected clients.
    pub fn client_count(&self) -> usize {
        Self::lock(&self.clients).len()
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for c in Self::lock(&self.clients).iter() {
            c.notify.notify_one();
        }
    }

    fn add(&self) -> Arc<Client> {
        let c = Arc::new(Client {
            queue: Mutex::new(Self::lock(&self.recent).iter().cloned().collect()),
            lost: AtomicU64::new(0),
            notify: Notify::new(),
        });
        c.notify.notify_one();
        let mut v = Self::lock(&self.clients);
        v.push(c.clone());
        self.metrics.ws(v.len(), 0);
        c
    }

    fn remove(&self, c: &Arc<Client>) {
        let mut v = Self::lock(&self.clients);
        v.retain(|x| !Arc::ptr_eq(x, c));
        self.metrics.ws(v.len(), 0);
    }
}

/// The running server; also a [`Sink`].
pub struct WsServer {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    hub: Arc<Hub>,
    thread: Option<std::thread::JoinHandle<()>>,
    stop: Arc<Notify>,
}

impl WsServer {
    /// Binds `addr` and serves in a background thread: each client buffers at most
    /// `cfg.ws_client_buffer` events, and at most `cfg.ws_max_clients` connections are
    /// served at once (more are answered 503 and closed).
    pub fn start(addr: &str, cfg: &SinksConfig, metrics: Arc<Metrics>) -> Result<Self, SinkError> {
        let capacity = cfg.ws_client_buffer;
        let slots = Arc::new(Semaphore::new(cfg.ws_max_clients));
        let err = |e: std::io::Error| SinkError::Io {
            target: format!("websocket server {addr}"),
            source: e,
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .thread_name("ws-server")
            .build()
            .map_err(err)?;
        let listener = rt.block_on(TcpListener::bind(addr)).map_err(|e| {
            err(std::io::Error::new(
                e.kind(),
                format!("cannot listen: {e}; is the port free?"),
            ))
        })?;
        let local = listener.local_addr().map_err(err)?;
        let hub = Arc::new(Hub::new(capacity, metrics.clone()));
        let stop = Arc::new(Notify::new());
        let (h, s) = (hub.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("ws-server".into())
            .spawn(move || {
                rt.block_on(async move {
                    let mut tasks = tokio::task::JoinSet::new();
                    loop {
                        tokio::select! {
                            _ = s.notified() => break,
                            r = listener.accept() => {
                                let Ok((stream, _)) = r else { continue };
                                match slots.clone().try_acquire_owned() {
                                    Ok(permit) => {
                                        let (h, m) = (h.clone(), metrics.clone());
                                        tasks.spawn(async move {
                                            serve(stream, h, m).await;
                                            drop(permit);
                                        });
                                    }
                                    Err(_) => {
                                        metrics.ws_refused();
                                        tasks.spawn(refuse(stream));
                                    }
                                }
                            }
                        }
                    }
                    // Let clients get their close frames (bounded wait).
                    let _ = tokio::time::timeout(Duration::from_secs(3), async {
                        while tasks.join_next().await.is_some() {}
                    })
                    .await;
                });
            })
            .map_err(err)?;
        Ok(Self {
            addr: local,
            hub,
            thread: Some(thread),
            stop,
        })
    }

    /// The hub (client count).
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Closes every client with a close frame and stops the server.
    pub fn shutdown(&mut self) {
        if let Some(t) = self.thread.take() {
            self.hub.close();
            self.stop.notify_one();
            let _ = t.join();
        }
    }
}

impl Drop for WsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Sink for WsServer {
    fn name(&self) -> String {
        format!("websocket ws://{}/ws", self.addr)
    }
    fn write(&mut self, out: &Output) -> Result<(), SinkError> {
        self.hub.publish(&out.to_json());
        Ok(())
    }
    fn close(&mut self) -> Result<(), SinkError> {
        self.shutdown();
        Ok(())
    }
}

/// Largest request head accepted (bytes).
const MAX_HEAD: usize = 8192;
/// How long a connection may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Why no request could be read.
enum BadHead {
    /// The client closed or sent nothing in time (no answer is owed).
    Gone,
    /// The head is larger than [`MAX_HEAD`].
    TooLarge,
}

/// Reads a request head without consuming it (the websocket handshake reads it again),
/// within [`HEAD_TIMEOUT`].
async fn peek_head(stream: &TcpStream) -> Result<String, BadHead> {
    let read = async {
        let mut buf = vec![0u8; MAX_HEAD];
        loop {
            let n = stream.peek(&mut buf).await.map_err(|_| BadHead::Gone)?;
            if n == 0 {
                return Err(BadHead::Gone);
            }
            if let Some(i) = buf[..n].windows(4).position(|w| w == b"\r\n\r\n") {
                return Ok(String::from_utf8_lossy(&buf[..i]).into_owned());
            }
            if n == buf.len() {
                return Err(BadHead::TooLarge);
            }
            // Part of the head: wait for more before peeking again.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(HEAD_TIMEOUT, read)
        .await
        .unwrap_or(Err(BadHead::Gone))
}

/// The path of a well-formed `GET PATH HTTP/1.x` request line, or the status to answer.
fn request_path(head: &str) -> Result<&str, (&'static str, &'static [u8])> {
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (method, path, version) = (parts.next(), parts.next(), parts.next());
    match (method, path, version, parts.next()) {
        (Some("GET" | "HEAD"), Some(p), Some(v), None)
            if p.starts_with('/') && v.starts_with("HTTP/1.") =>
        {
            Ok(p)
        }
        (Some(_), Some(p), Some(v), None) if p.starts_with('/') && v.starts_with("HTTP/1.") => {
            Err(("405 Method Not Allowed", b"only GET is served here\n"))
        }
        _ => Err(("400 Bad Request", b"not an HTTP/1.1 request\n")),
    }
}

async fn respond(mut stream: TcpStream, status: &str, ctype: &str, body: &[u8]) {
    // Consume the request head first so the client sees a clean response.
    let mut sink = [0u8; 8192];
    let _ = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut sink)).await;
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_get_requests_are_served() {
        assert_eq!(
            request_path("GET /health HTTP/1.1\r\nHost: x"),
            Ok("/health")
        );
        assert_eq!(request_path("GET / HTTP/1.0"), Ok("/"));
        let status = |h| request_path(h).unwrap_err().0;
        assert_eq!(status("POST /ws HTTP/1.1"), "405 Method Not Allowed");
        assert_eq!(status("hello there"), "400 Bad Request");
        assert_eq!(status("GET / SMTP/2"), "400 Bad Request");
        assert_eq!(status("\u{0}\u{1}garbage"), "400 Bad Request");
    }
}

/// Answers a connection over the limit politely and closes it.
async fn refuse(stream: TcpStream) {
    respond(
        stream,
        "503 Service Unavailable",
        "text/plain",
        b"too many clients: this sentistream serves at most sinks.ws_max_clients connections; try again later\n",
    )
    .await
}

async fn serve(stream: TcpStream, hub: Arc<Hub>, metrics: Arc<Metrics>) {
    let head = match peek_head(&stream).await {
        Ok(h) => h,
        Err(BadHead::Gone) => return,
        Err(BadHead::TooLarge) => {
            let body = b"request header too large\n";
            return respond(
                stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                body,
            )
            .await;
        }
    };
    let path = match request_path(&head) {
        Ok(p) => p.split('?').next().unwrap_or(p).to_string(),
        Err((status, body)) => return respond(stream, status, "text/plain", body).await,
    };
    let upgrade = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("upgrade:")
            && l.to_ascii_lowercase().contains("websocket")
    });
    match (path.as_str(), upgrade) {
        ("/ws", true) => client(stream, hub).await,
        ("/" | "/index.html", false) => {
            respond(
                stream,
                "200 OK",
                "text/html; charset=utf-8",
                LIVE_PAGE.as_bytes(),
            )
            .await
        }
        ("/metrics", false) => {
            respond(
                stream,
                "200 OK",
                "text/plain; version=0.0.4",
                metrics.render().as_bytes(),
            )
            .await
        }
        ("/health", false) => {
            let body = metrics.health().to_string();
            respond(stream, "200 OK", "application/json", body.as_bytes()).await
        }
        _ => {
            respond(
                stream,
                "404 Not Found",
                "text/plain",
                b"not found; try /, /ws, /metrics or /health\n",
            )
            .await
        }
    }
}

async fn client(stream: TcpStream, hub: Arc<Hub>) {
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (mut tx, mut rx) = ws.split();
    let me = hub.add();
    'outer: loop {
        tokio::select! {
            _ = me.notify.notified() => {
                if hub.closed.load(Ordering::SeqCst) {
                    // Deliver what is queued, then say goodbye.
                    let rest: Vec<Arc<str>> = Hub::lock(&me.queue).drain(..).collect();
                    for m in rest {
                        if tx.send(Message::text(m.to_string())).await.is_err() {
                            break 'outer;
                        }
                    }
                    let _ = tx
                        .send(Message::Close(Some(CloseFrame {
                            code: CloseCode::Normal,
                            reason: "sentistream is shutting down".into(),
                        })))
                        .await;
                    break;
                }
                loop {
                    let lost = me.lost.swap(0, Ordering::Relaxed);
                    if lost > 0 {
                        let notice = format!("{{\"notice\":\"lagged\",\"lost\":{lost}}}");
                        if tx.send(Message::text(notice)).await.is_err() {
                            break 'outer;
                        }
                    }
                    let next = Hub::lock(&me.queue).pop_front();
                    let Some(m) = next else { break };
                    if tx.send(Message::text(m.to_string())).await.is_err() {
                        break 'outer;
                    }
                }
            }
            incoming = rx.next() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                _ => {}
            }
        }
    }
    hub.remove(&me);
}
