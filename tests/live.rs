//! `run` end to end with real components: the sample played in real time through a
//! launch description (a live-like source), two streams in one process, the websocket
//! server with a real client and the live page in headless Chromium, an RTSP server on
//! loopback (gst-rtsp-server) that is stopped and restarted mid-stream, and shutdown by
//! SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The real-time tests share 2 cores: run them one at a time, so each stream keeps up
/// with its clock as it would on a machine of its own.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn have_models() -> bool {
    common::model("ggml-base.bin").is_some()
        && common::model("ggml-silero-v6.2.0.bin").is_some()
        && common::model("all-MiniLM-L6-v2/model.safetensors").is_some()
}

/// Length of samples/sample.mp4, seconds.
const SAMPLE_S: f64 = 21.0;

fn realtime_sample() -> String {
    format!(
        "{}?location={}",
        common::repo("pipelines/realtime-file.gst").display(),
        common::repo("samples/sample.mp4").display()
    )
}

/// A running sentistream with its stdout and stderr lines arriving on channels.
struct Running {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

fn start(args: &[&str]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sentistream"))
        .args(args)
        .env("SENTISTREAM_MODELS", common::models_dir())
        .env("RUST_LOG", "sentistream=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sentistream");
    let lines = |r: Box<dyn std::io::Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(r).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        rx
    };
    let stdout = lines(Box::new(child.stdout.take().unwrap()));
    let stderr = lines(Box::new(child.stderr.take().unwrap()));
    Running {
        child,
        stdout,
        stderr,
    }
}

impl Running {
    /// Waits for a stdout JSON object matching `f` (collecting everything seen).
    fn wait_stdout(
        &self,
        seen: &mut Vec<Value>,
        timeout: Duration,
        f: impl Fn(&Value) -> bool,
    ) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if let Ok(l) = self.stdout.recv_timeout(Duration::from_millis(100)) {
                let v: Value =
                    serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}"));
                let hit = f(&v);
                seen.push(v);
                if hit {
                    return true;
                }
            }
        }
        false
    }
    /// The server address from the stderr banner.
    fn address(&self, log: &mut Vec<String>) -> String {
        let until = Instant::now() + Duration::from_secs(120);
        while Instant::now() < until {
            if let Ok(l) = self.stderr.recv_timeout(Duration::from_millis(100)) {
                log.push(l.clone());
                if let Some(rest) = l.split("live page http://").nth(1) {
                    return rest.split('/').next().unwrap().to_string();
                }
            }
        }
        panic!("no server banner: {log:#?}");
    }
    fn signal(&self, sig: &str) {
        Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
    }
    /// Waits for the exit; returns (success, remaining stdout JSON, stderr lines).
    fn finish(mut self, timeout: Duration) -> (bool, Vec<Value>, Vec<String>) {
        let until = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                panic!("sentistream did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        std::thread::sleep(Duration::from_millis(200));
        let out = self
            .stdout
            .try_iter()
            .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
            .collect();
        let err = self.stderr.try_iter().collect();
        (status.success(), out, err)
    }
}

/// The sample played in real time as stream `call` (English), with `extra` arguments.
fn start_call(extra: &[&str]) -> Running {
    let sample = realtime_sample();
    let mut args = vec!["run", &sample, "--id", "call", "--language", "en"];
    args.extend_from_slice(extra);
    start(&args)
}

fn windows<'a>(events: &'a [Value], stream: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["stream"] == stream && e.get("seq").is_some())
        .collect()
}

#[test]
fn two_live_streams_in_one_process_with_files_and_figures() {
    if !have_models() {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let src = realtime_sample();
    let vtt = dir.path().join("{stream}.vtt");
    let srt = dir.path().join("{stream}.srt");
    let jsonl = dir.path().join("all.jsonl");
    let t = Instant::now();
    let r = start(&[
        "run",
        &src,
        &src,
        "--id",
        "left",
        "--id",
        "right",
        "--language",
        "en",
        "--stats",
        "--sink",
        "stdout",
        "--sink",
        vtt.to_str().unwrap(),
        "--sink",
        &format!("file:{}", srt.display()),
        "--sink",
        jsonl.to_str().unwrap(),
    ]);
    let (ok, events, err) = r.finish(Duration::from_secs(240));
    let wall = t.elapsed().as_secs_f64();
    assert!(ok, "{err:#?}");
    let err = err.join("\n");
    eprintln!("{err}");
    for id in ["left", "right"] {
        let w = windows(&events, id);
        assert_eq!(w.len(), 4, "{id}: {events:#?}");
        for (i, e) in w.iter().enumerate() {
            assert_eq!(e["seq"], i as u64);
        }
        let statuses: Vec<&Value> = events
            .iter()
            .filter(|e| e["stream"] == id && e.get("status").is_some())
            .map(|e| &e["status"])
            .collect();
        assert_eq!(statuses, ["started", "ended"], "{id}");
        // The files hold the same windows and parse back.
        let v = std::fs::read_to_string(dir.path().join(format!("{id}.vtt"))).unwrap();
        let cues = sentistream::sinks::files::parse_vtt(&v).unwrap();
        assert_eq!(cues.len(), 4);
        assert!((cues[0].start - w[0]["start"].as_f64().unwrap()).abs() < 0.002);
        assert!(v.contains("NOTE stream"), "notices in WebVTT: {v}");
        let s = std::fs::read_to_string(dir.path().join(format!("{id}.srt"))).unwrap();
        assert_eq!(sentistream::sinks::files::parse_srt(&s).unwrap().len(), 4);
        assert!(err.contains(&format!("stream {id}: 4 windows")), "{err}");
    }
    let lines = std::fs::read_to_string(&jsonl).unwrap();
    assert_eq!(
        lines.lines().count(),
        events.len(),
        "the JSONL file equals stdout"
    );
    // Real time: 21 s of media per stream, played at the pipeline clock.
    assert!(wall > 20.0, "live sources run on the clock ({wall:.1} s)");
}

#[test]
fn windows_processed_early_give_the_same_events() {
    if !have_models() {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let late = dir.path().join("late.toml");
    std::fs::write(&late, "[segment]\nprocess_early = false\n").unwrap();
    let (ok, early, err_early) = start_call(&[]).finish(Duration::from_secs(240));
    assert!(ok, "{err_early:#?}");
    let (ok, plain, err_plain) =
        start_call(&["--config", late.to_str().unwrap()]).finish(Duration::from_secs(240));
    assert!(ok, "{err_plain:#?}");
    let (a, b) = (windows(&early, "call"), windows(&plain, "call"));
    assert_eq!(a.len(), 4, "{early:#?}");
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        for key in [
            "seq", "start", "end", "text", "score", "polarity", "stage", "frames",
        ] {
            assert_eq!(x[key], y[key], "{key}: {x} vs {y}");
        }
    }
    // Windows went out as their pauses were confirmed; a pause the speech went on after
    // cost a thrown-away result, counted.
    let line = err_early
        .iter()
        .find(|l| l.contains("processed early:"))
        .unwrap_or_else(|| panic!("{err_early:#?}"));
    let sent: u32 = line
        .split("processed early: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!((1..=4).contains(&sent), "{line}");
    assert!(!err_plain.iter().any(|l| l.contains("processed early")));
}

#[test]
fn websocket_clients_get_the_stdout_events_and_the_page_draws_them() {
    if !have_models() {
        return;
    }
    let _serial = serial();
    let r = start(&[
        "run",
        &realtime_sample(),
        "--id",
        "cam",
        "--language",
        "en",
        "--sink",
        "stdout",
        "--sink",
        "ws://127.0.0.1:0",
    ]);
    let mut log = Vec::new();
    let addr = r.address(&mut log);
    // A real websocket client, connected before the first window ends.
    let url = format!("ws://{addr}/ws");
    let (_connected, client) = ws_client(url, Duration::ZERO);
    // Metrics and health while it runs.
    let mut seen = Vec::new();
    assert!(r.wait_stdout(&mut seen, Duration::from_secs(60), |e| {
        e.get("seq").is_some()
    }));
    let metrics = http_get(&addr, "/metrics");
    assert!(
        metrics.contains("sentistream_windows_total{stream=\"cam\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sentistream_stage_latency_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sentistream_lag_seconds{stream=\"cam\"}"),
        "{metrics}"
    );
    let health: Value =
        serde_json::from_str(http_get(&addr, "/health").split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["streams"]["cam"]["state"], "started");
    // The live page in headless Chromium draws the events it receives.
    let page = chromium_dom(&addr);
    let (ok, rest, err) = r.finish(Duration::from_secs(120));
    assert!(ok, "{err:#?}");
    seen.extend(rest);
    let (ws, closed) = client.join().unwrap();
    assert!(closed, "clients get a close frame at the end");
    let stdout: Vec<String> = seen.iter().map(|v| v.to_string()).collect();
    let ws_values: Vec<String> = ws
        .iter()
        .map(|t| serde_json::from_str::<Value>(t).unwrap().to_string())
        .collect();
    assert_eq!(
        ws_values, stdout,
        "websocket and stdout carry identical events"
    );
    assert_eq!(windows(&seen, "cam").len(), 4);
    if let Some(dom) = page {
        let n: u32 = dom
            .split("<b id=\"count\">")
            .nth(1)
            .and_then(|s| s.split('<').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        assert!(
            n >= 1,
            "the page counted events: {}",
            &dom[..dom.len().min(2000)]
        );
        assert!(
            dom.contains("data-stream=\"cam\""),
            "a chart for the stream"
        );
    }
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// Loads the page in headless Chromium for a few seconds; returns its DOM (and saves a
/// screenshot to live-page.png in the tests' temporary folder under target/). `None` with a printed reason if Chromium is
/// missing (scripts/setup installs it).
fn chromium_dom(addr: &str) -> Option<String> {
    let bin = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(bin) = bin else {
        common::skip("chromium (for the live page check) is not installed");
        return None;
    };
    let url = format!("http://{addr}/");
    let common_args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1200,800",
        "--virtual-time-budget=8000",
    ];
    // Screenshot and DOM at the same time: the page counts only events that arrive while
    // it is open, and the stream lasts 21 s (one after the other, a slow Chromium start
    // under load opened the second page after the stream had ended).
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("live-page.png");
    let _ = std::fs::remove_file(&shot);
    let screenshot = Command::new(bin)
        .args(common_args)
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let out = Command::new(bin)
        .args(common_args)
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("run chromium");
    if let Ok(mut child) = screenshot {
        let _ = child.wait();
    }
    assert!(
        shot.exists(),
        "screenshot written: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn sigterm_drains_and_closes_files_valid() {
    if !have_models() {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let vtt = dir.path().join("out.vtt");
    let r = start_call(&["--sink", "stdout", "--sink", vtt.to_str().unwrap()]);
    let mut seen = Vec::new();
    assert!(r.wait_stdout(&mut seen, Duration::from_secs(60), |e| {
        e.get("seq").is_some()
    }));
    // The process restarted itself once with libgomp's spin count set (src/main.rs), under
    // the same pid, so the signal below reaches the running stream.
    if std::env::var_os("GOMP_SPINCOUNT").is_none() && std::env::var_os("OMP_WAIT_POLICY").is_none()
    {
        let environ = std::fs::read(format!("/proc/{}/environ", r.child.id())).unwrap();
        assert!(
            environ
                .split(|b| *b == 0)
                .any(|v| v == b"GOMP_SPINCOUNT=2000"),
            "{}",
            String::from_utf8_lossy(&environ)
        );
    }
    r.signal("-TERM");
    let (ok, rest, err) = r.finish(Duration::from_secs(60));
    assert!(ok, "a drained shutdown exits 0: {err:#?}");
    seen.extend(rest);
    // The last line is the call summary, incomplete (stopped early); the notice before it.
    let summary = seen.last().unwrap();
    assert_eq!(summary["summary"]["complete"], false, "{seen:#?}");
    let last = &seen[seen.len() - 2];
    assert_eq!(last["status"], "ended", "{seen:#?}");
    assert_eq!(last["reason"], "shutdown");
    // The stream ended where the signal found it (stream time), not at the input's end.
    assert!(
        last["at"].as_f64().unwrap() < SAMPLE_S - 1.0,
        "shutdown does not wait for the input to end: {last}"
    );
    assert!(err.iter().any(|l| l.contains("stopping")), "{err:#?}");
    let n = windows(&seen, "call").len();
    assert!((1..4).contains(&n), "stopped early: {n} windows");
    let cues =
        sentistream::sinks::files::parse_vtt(&std::fs::read_to_string(&vtt).unwrap()).unwrap();
    assert_eq!(
        cues.len(),
        n,
        "the file is valid and complete up to the last window"
    );
}

#[test]
fn webcam_and_custom_pipelines_are_checked_up_to_the_device() {
    let cfg = sentistream::config::SourceConfig::default();
    let input = sentistream::source::Input::parse("/dev/video7", &cfg).unwrap();
    let sentistream::source::Input::Launch { description, .. } = &input else {
        panic!("{input:?}");
    };
    assert!(description.contains("v4l2src device=/dev/video7"));
    assert!(description.contains("framerate=5/1,width=320"));
    assert!(input.known_live());
    gstreamer::init().unwrap();
    // The description is a valid pipeline with both appsinks (the device is only opened
    // when it plays; no webcam exists here).
    let p = gstreamer::parse::launch(description).expect("webcam description parses");
    let bin = p.downcast::<gstreamer::Bin>().unwrap();
    use gstreamer::prelude::*;
    assert!(bin.by_name("audio").is_some() && bin.by_name("video").is_some());
    // A missing webcam is a clear error, not a hang.
    let out = common::sentistream(&["run", "/dev/video7", "--no-sentiment", "--sink", "stdout"]);
    if common::model("ggml-base.bin").is_some() {
        assert!(!out.status.success());
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(e.contains("/dev/video7"), "{e}");
    }
    // Launch descriptions: placeholders must be filled; appsinks are required.
    let e = sentistream::source::Input::parse(
        common::repo("pipelines/realtime-file.gst")
            .to_str()
            .unwrap(),
        &cfg,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("{location}") && e.contains("location=VALUE"),
        "{e}"
    );
}

/// A real websocket client on its own thread: it says when it is connected, waits
/// `pause` (a stalled reader), then collects every text message until the connection
/// ends; the thread returns (texts, whether the server sent a close frame).
fn ws_client(
    url: String,
    pause: Duration,
) -> (
    mpsc::Receiver<()>,
    std::thread::JoinHandle<(Vec<String>, bool)>,
) {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            use futures_util::StreamExt;
            use tokio_tungstenite::tungstenite::Message;
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            let _ = tx.send(());
            tokio::time::sleep(pause).await;
            let (mut got, mut closed) = (Vec::new(), false);
            while let Some(Ok(m)) = ws.next().await {
                match m {
                    Message::Text(t) => got.push(t.to_string()),
                    Message::Close(_) => {
                        closed = true;
                        break;
                    }
                    _ => {}
                }
            }
            (got, closed)
        })
    });
    (rx, thread)
}

/// A websocket server on a free port with its own metrics.
fn ws_server(
    cfg: sentistream::config::SinksConfig,
) -> (
    sentistream::sinks::websocket::WsServer,
    std::sync::Arc<sentistream::metrics::Metrics>,
) {
    let metrics = std::sync::Arc::new(sentistream::metrics::Metrics::default());
    let server =
        sentistream::sinks::websocket::WsServer::start("127.0.0.1:0", &cfg, metrics.clone())
            .unwrap();
    (server, metrics)
}

#[test]
fn slow_websocket_client_loses_its_own_oldest_events_and_never_stalls_the_publisher() {
    use sentistream::event::{Output, StatusEvent, StreamStatus};
    use sentistream::sinks::Sink;
    let _serial = serial();
    let (mut server, metrics) = ws_server(sentistream::config::SinksConfig {
        ws_client_buffer: 64,
        ..Default::default()
    });
    let url = format!("ws://{}/ws", server.addr);
    // A client's (events, lost) from what it received.
    let counts = |texts: Vec<String>| {
        let (mut events, mut lost) = (0u64, 0u64);
        for t in texts {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["notice"] == "lagged" {
                lost += v["lost"].as_u64().unwrap();
            } else {
                events += 1;
            }
        }
        (events, lost)
    };
    let client = |slow: bool| {
        let pause = Duration::from_secs(if slow { 4 } else { 0 });
        ws_client(url.clone(), pause).1
    };
    let fast = client(false);
    let slow = client(true);
    while server.hub().client_count() < 2 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let pad = "x".repeat(8000);
    let n = 2000u64;
    let mut worst = Duration::ZERO;
    let t = Instant::now();
    for i in 0..n {
        let o = Output::Status(StatusEvent {
            stream: format!("s{i}"),
            status: StreamStatus::Started,
            at: i as f64,
            reason: Some(pad.clone()),
            emitted_at_ms: 0,
        });
        let t1 = Instant::now();
        server.write(&o).unwrap();
        worst = worst.max(t1.elapsed());
        // ~1000 events (8 MB) per second: a reading client keeps up, a stalled one
        // fills its socket buffers within its 4 s pause.
        std::thread::sleep(Duration::from_millis(1));
    }
    let publish = t.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    server.close().unwrap();
    let (fe, fl) = counts(fast.join().unwrap().0);
    let (se, sl) = counts(slow.join().unwrap().0);
    eprintln!(
        "publish {publish:?} (worst call {worst:?}); fast client {fe} events, {fl} lost; slow client {se} events, {sl} lost"
    );
    assert_eq!((fe, fl), (n, 0), "the fast client got everything");
    // Had publishing waited for the stalled client, it would have lost nothing.
    assert!(sl > 0, "the slow client was told it lost events");
    assert_eq!(se + sl, n, "every event is delivered or reported lost");
    assert!(
        metrics
            .render()
            .contains("sentistream_websocket_lost_total")
    );
}

#[test]
fn rtsp_source_reconnects_after_the_server_goes_away() {
    if !have_models() {
        return;
    }
    let _serial = serial();
    let (server, port) = rtsp_server();
    let url = format!("rtsp://127.0.0.1:{port}/sample");
    let r = start(&[
        "run",
        &url,
        "--id",
        "cam",
        "--language",
        "en",
        "--sink",
        "stdout",
    ]);
    let mut seen = Vec::new();
    assert!(
        r.wait_stdout(&mut seen, Duration::from_secs(90), |e| e
            .get("seq")
            .is_some()),
        "a first window over RTSP: {seen:#?}"
    );
    drop(server); // the server goes away mid-stream
    assert!(
        r.wait_stdout(&mut seen, Duration::from_secs(60), |e| e["status"]
            == "interrupted"),
        "{seen:#?}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let server = rtsp::Server::start(port);
    assert!(
        r.wait_stdout(&mut seen, Duration::from_secs(90), |e| e["status"]
            == "resumed"),
        "{seen:#?}"
    );
    let before = windows(&seen, "cam").len();
    assert!(
        r.wait_stdout(&mut seen, Duration::from_secs(90), |e| e
            .get("seq")
            .is_some()),
        "windows after the reconnect: {seen:#?}"
    );
    r.signal("-INT");
    let (ok, rest, err) = r.finish(Duration::from_secs(60));
    drop(server);
    assert!(ok, "{err:#?}");
    seen.extend(rest);
    let w = windows(&seen, "cam");
    assert!(w.len() > before);
    // Window numbers and stream time keep increasing across the gap.
    for pair in w.windows(2) {
        assert_eq!(
            pair[1]["seq"].as_u64().unwrap(),
            pair[0]["seq"].as_u64().unwrap() + 1
        );
        assert!(pair[1]["start"].as_f64().unwrap() >= pair[0]["end"].as_f64().unwrap());
    }
}

/// An RTSP server on loopback (GStreamer's gst-rtsp-server) serving the sample clip,
/// re-encoded live (H.264 + Opus), one fresh media per client.
/// A real RTSP server serving the sample at /sample, on a free port.
fn rtsp_server() -> (rtsp::Server, u16) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    (rtsp::Server::start(port), port)
}

mod rtsp {
    use gstreamer_rtsp_server as rs;
    use gstreamer_rtsp_server::prelude::*;

    pub struct Server {
        main_loop: gstreamer::glib::MainLoop,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Server {
        pub fn start(port: u16) -> Self {
            gstreamer::init().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            let sample = super::common::repo("samples/sample.mp4");
            let thread = std::thread::spawn(move || {
                let ctx = gstreamer::glib::MainContext::new();
                let _guard = ctx.acquire().unwrap();
                let main_loop = gstreamer::glib::MainLoop::new(Some(&ctx), false);
                let server = rs::RTSPServer::new();
                server.set_address("127.0.0.1");
                server.set_service(&port.to_string());
                let factory = rs::RTSPMediaFactory::new();
                factory.set_launch(&format!(
                    "( filesrc location={} ! decodebin name=d d. ! queue ! videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast ! rtph264pay name=pay0 pt=96 d. ! queue ! audioconvert ! audioresample ! opusenc ! rtpopuspay name=pay1 pt=97 )",
                    sample.display()
                ));
                factory.set_shared(false);
                server
                    .mount_points()
                    .unwrap()
                    .add_factory("/sample", factory);
                let id = server.attach(Some(&ctx)).unwrap();
                tx.send(main_loop.clone()).unwrap();
                main_loop.run();
                // Going away: drop every client session and stop listening.
                server.client_filter(Some(&mut |_, _| rs::RTSPFilterResult::Remove));
                // The listening socket's source lives in this context, not the default one.
                if let Some(src) = ctx.find_source_by_id(&id) {
                    src.destroy();
                }
                while ctx.iteration(false) {}
            });
            let main_loop = rx.recv().unwrap();
            Self {
                main_loop,
                thread: Some(thread),
            }
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.main_loop.quit();
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

#[test]
fn websocket_server_refuses_connections_over_its_limit_politely() {
    use sentistream::sinks::Sink;
    use std::io::{Read, Write};
    let _serial = serial();
    let (mut server, metrics) = ws_server(sentistream::config::SinksConfig {
        ws_max_clients: 1,
        ..Default::default()
    });
    let addr = server.addr.to_string();
    let raw = |path: &str| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    // One websocket client holds the only slot until the server closes.
    let (rx, holder) = ws_client(format!("ws://{addr}/ws"), Duration::ZERO);
    rx.recv().unwrap();
    while server.hub().client_count() < 1 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let refused = raw("/health");
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("too many clients"), "{refused}");
    assert!(
        metrics
            .render()
            .contains("sentistream_websocket_refused_total 1")
    );
    // Open connections are bounded too (4 per slot): idle sockets beyond are closed at
    // once and counted.
    let idle: Vec<std::net::TcpStream> = (0..5)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    let until = Instant::now() + Duration::from_secs(30);
    while !metrics
        .render()
        .contains("sentistream_websocket_refused_total 2")
    {
        assert!(Instant::now() < until, "{}", metrics.render());
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(idle);
    server.close().unwrap();
    let _ = holder.join();
}

#[test]
fn a_wrong_rtsp_path_fails_fast_and_giving_up_is_a_failure() {
    if !have_models() {
        return;
    }
    let _serial = serial();
    let (server, port) = rtsp_server();
    // 404 from a real RTSP server: retrying cannot help, even when told to stay live.
    let wrong = format!("rtsp://127.0.0.1:{port}/no-such-path");
    let r = start(&["run", &wrong, "--live", "--id", "cam", "--language", "en"]);
    let (ok, events, err) = r.finish(Duration::from_secs(120));
    assert!(!ok, "a wrong path is a failure: {err:#?}");
    let err = err.join("\n");
    assert!(
        err.contains("error: stream cam: input") && err.contains("check the address"),
        "{err}"
    );
    let ended = events
        .iter()
        .rev()
        .find(|e| e.get("status").is_some())
        .unwrap();
    assert_eq!(ended["status"], "ended");
    assert!(
        ended["reason"].as_str().unwrap().contains("cannot read"),
        "{ended}"
    );
    drop(server);
    // Nothing listens: give up after the configured attempts, with a non-zero exit.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[source]\nreconnect_attempts = 2\nreconnect_max_s = 0.5\n",
    )
    .unwrap();
    let closed = format!("rtsp://127.0.0.1:{port}/sample");
    let r = start(&[
        "--config",
        cfg.to_str().unwrap(),
        "run",
        &closed,
        "--id",
        "cam",
        "--language",
        "en",
    ]);
    let (ok, events, err) = r.finish(Duration::from_secs(120));
    assert!(!ok, "giving up is a failure: {err:#?}");
    let err = err.join("\n");
    assert!(err.contains("gave up after 2 reconnect attempts"), "{err}");
    let ended = events
        .iter()
        .rev()
        .find(|e| e.get("status").is_some())
        .unwrap();
    assert!(
        ended["reason"].as_str().unwrap().contains("gave up"),
        "{ended}"
    );
}

#[test]
fn a_second_signal_exits_at_once_without_a_crash_and_outputs_stay_valid() {
    if !have_models() {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    for round in 0..5 {
        let jsonl = dir.path().join(format!("out{round}.jsonl"));
        let r = start_call(&["--sink", jsonl.to_str().unwrap()]);
        let mut log = Vec::new();
        // Wait until the stream has started (its models are loaded, threads running).
        let started = || std::fs::read_to_string(&jsonl).is_ok_and(|t| t.contains("\"started\""));
        let until = Instant::now() + Duration::from_secs(120);
        while Instant::now() < until && !started() {
            if let Ok(l) = r.stderr.recv_timeout(Duration::from_millis(100)) {
                log.push(l);
            }
        }
        r.signal("-INT");
        // The second signal comes while the first is still draining.
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            match r.stderr.recv_timeout(Duration::from_millis(100)) {
                Ok(l) if l.contains("stopping") => break,
                Ok(l) => log.push(l),
                Err(_) => {}
            }
        }
        r.signal("-INT");
        let mut child = r.child;
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            None,
            "round {round}: killed by a signal: {log:#?}"
        );
        assert!(
            matches!(status.code(), Some(0 | 130)),
            "round {round}: exit {status:?}: {log:#?}"
        );
        // Every line written is whole JSON.
        let text = std::fs::read_to_string(&jsonl).unwrap();
        for l in text.lines() {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("round {round}: broken line {l:?}: {e}"));
        }
    }
}

#[test]
fn the_http_front_answers_bad_requests_with_4xx_and_drops_idle_connections() {
    use std::io::{Read, Write};
    let _serial = serial();
    let (mut server, _metrics) = ws_server(sentistream::config::SinksConfig::default());
    let addr = server.addr;
    let exchange = |raw: &[u8]| {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        // Only a guard against a hang: the server answers or closes long before.
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s.write_all(raw).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    let garbage = exchange(b"\x16\x03\x01hello there\r\n\r\n");
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
    let post = exchange(
        b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    let mut big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 64 * 1024));
    big.extend(b"\r\n\r\n");
    let big = exchange(&big);
    assert!(
        big.starts_with("HTTP/1.1 431"),
        "{}",
        &big[..big.len().min(200)]
    );
    let missing = exchange(b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    // A connection that never sends a request is closed by the server (not held open).
    let mut idle = std::net::TcpStream::connect(addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut buf = [0u8; 256];
    let closed = match idle.read(&mut buf) {
        Ok(_) => true,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    };
    assert!(closed, "an idle connection is closed by the server");
    use sentistream::sinks::Sink;
    server.close().unwrap();
}

#[test]
fn annotate_stops_on_ctrl_c_with_valid_files_and_exit_130() {
    if !have_models() {
        return;
    }
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let vtt = dir.path().join("call.vtt");
    let args = common::annotate_sample(&[&vtt]);
    let r = start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    // The first window is out; the others are still being worked on.
    let mut seen = Vec::new();
    assert!(r.wait_stdout(&mut seen, Duration::from_secs(120), |e| {
        e.get("seq").is_some()
    }));
    r.signal("-INT");
    let mut child = r.child;
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "stopped early: exit 130");
    let text = std::fs::read_to_string(&vtt).unwrap();
    let cues = sentistream::sinks::files::parse_vtt(&text).unwrap();
    // What was found before the stop is there, in a file that parses.
    assert!(!cues.is_empty(), "{text}");
}
