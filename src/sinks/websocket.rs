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

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::config::SinksConfig;
use crate::error::SinkError;
use crate::event::Output;
use crate::metrics::Metrics;
use crate::sinks::Sink;

/// How long a connection may take to send a request head; idle ones are closed.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head read (bytes); a larger one is answered 431.
const MAX_HEAD: usize = 16 * 1024;
/// Open connections allowed per served slot (`sinks.ws_max_clients`): room for clients
/// still sending their request head; beyond it new connections are closed at once.
const OPEN_PER_SLOT: usize = 4;
/// How long shutdown waits for clients to take their close frames.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

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

/// What every request handler shares.
#[derive(Clone)]
struct Front {
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    /// One permit per connection being served (`sinks.ws_max_clients`).
    slots: Arc<Semaphore>,
    /// One permit per open TCP connection (a bound on idle or slow ones).
    open: Arc<Semaphore>,
}

impl WsServer {
    /// Binds `addr` and serves in a background thread: each client buffers at most
    /// `cfg.ws_client_buffer` events, and at most `cfg.ws_max_clients` connections are
    /// served at once (more are answered 503).
    pub fn start(addr: &str, cfg: &SinksConfig, metrics: Arc<Metrics>) -> Result<Self, SinkError> {
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
                format!("cannot listen ({e}); is the port free?"),
            ))
        })?;
        let local = listener.local_addr().map_err(err)?;
        let hub = Arc::new(Hub::new(cfg.ws_client_buffer, metrics.clone()));
        let front = Front {
            hub: hub.clone(),
            metrics,
            slots: Arc::new(Semaphore::new(cfg.ws_max_clients)),
            open: Arc::new(Semaphore::new(cfg.ws_max_clients * OPEN_PER_SLOT)),
        };
        let stop = Arc::new(Notify::new());
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ws-server".into())
            .spawn(move || rt.block_on(serve(listener, front, s)))
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

/// The routes: the live page, the websocket, metrics and health; anything else 404.
fn routes(front: Front) -> Router {
    let limited = Router::new()
        .route("/", get(page))
        .route("/index.html", get(page))
        .route("/metrics", get(prometheus))
        .route("/health", get(health))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            front.clone(),
            one_slot,
        ));
    Router::new()
        .route("/ws", get(websocket))
        .merge(limited)
        .with_state(front)
}

/// Accepts connections until told to stop, then lets clients take their close frames
/// (bounded wait). HTTP/1.1 comes from hyper: malformed requests get 400, other methods
/// 405, oversized heads 431, and a connection that sends no head in time is closed.
async fn serve(listener: TcpListener, front: Front, stop: Arc<Notify>) {
    let (hub, open, metrics) = (front.hub.clone(), front.open.clone(), front.metrics.clone());
    let app = TowerToHyperService::new(routes(front));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.notified() => break,
            r = listener.accept() => {
                // Finished connections are reaped so the set does not grow with scrapes.
                while connections.try_join_next().is_some() {}
                let Ok((stream, _)) = r else { continue };
                let Ok(permit) = open.clone().try_acquire_owned() else {
                    // Too many open connections: close this one at once.
                    metrics.ws_refused();
                    drop(stream);
                    continue;
                };
                let (http, app) = (http.clone(), app.clone());
                connections.spawn(async move {
                    connection(http, stream, app).await;
                    drop(permit);
                });
            }
        }
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while hub.client_count() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    connections.abort_all();
}

/// Serves one connection (its websocket, if it upgrades, runs on its own task).
async fn connection(
    http: hyper::server::conn::http1::Builder,
    stream: TcpStream,
    app: TowerToHyperService<Router>,
) {
    let _ = http
        .serve_connection(TokioIo::new(stream), app)
        .with_upgrades()
        .await;
}

/// Holds one connection slot while a request is answered; none free: 503.
async fn one_slot(State(front): State<Front>, req: Request, next: Next) -> Response {
    match front.slots.clone().try_acquire_owned() {
        Ok(_permit) => next.run(req).await,
        Err(_) => too_many(&front.metrics),
    }
}

fn too_many(metrics: &Metrics) -> Response {
    metrics.ws_refused();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "too many clients: this sentistream serves at most sinks.ws_max_clients connections; try again later\n",
    )
        .into_response()
}

async fn page() -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::response::Html(LIVE_PAGE),
    )
        .into_response()
}

async fn prometheus(State(front): State<Front>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/plain; version=0.0.4"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        front.metrics.render(),
    )
        .into_response()
}

async fn health(State(front): State<Front>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        front.metrics.health().to_string(),
    )
        .into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "not found; try /, /ws, /metrics or /health\n",
    )
        .into_response()
}

/// The websocket: a client for as long as it stays, holding one connection slot.
async fn websocket(State(front): State<Front>, ws: WebSocketUpgrade) -> Response {
    match front.slots.clone().try_acquire_owned() {
        Ok(permit) => ws.on_upgrade(move |socket| client(socket, front.hub, permit)),
        Err(_) => too_many(&front.metrics),
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

/// Sends the hub's events to one websocket client until it leaves or the server stops
/// (then what is queued is delivered and a close frame sent).
async fn client(socket: WebSocket, hub: Arc<Hub>, _slot: OwnedSemaphorePermit) {
    let (mut tx, mut rx) = socket.split();
    let me = hub.add();
    let text = |m: &str| Message::Text(m.to_string().into());
    'outer: loop {
        tokio::select! {
            _ = me.notify.notified() => {
                if hub.closed.load(Ordering::SeqCst) {
                    let rest: Vec<Arc<str>> = Hub::lock(&me.queue).drain(..).collect();
                    for m in rest {
                        if tx.send(text(&m)).await.is_err() {
                            break 'outer;
                        }
                    }
                    let bye = CloseFrame {
                        code: close_code::NORMAL,
                        reason: "sentistream is shutting down".into(),
                    };
                    let _ = tx.send(Message::Close(Some(bye))).await;
                    break;
                }
                loop {
                    let lost = me.lost.swap(0, Ordering::Relaxed);
                    if lost > 0 {
                        let notice = format!("{{\"notice\":\"lagged\",\"lost\":{lost}}}");
                        if tx.send(text(&notice)).await.is_err() {
                            break 'outer;
                        }
                    }
                    let next = Hub::lock(&me.queue).pop_front();
                    let Some(m) = next else { break };
                    if tx.send(text(&m)).await.is_err() {
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
