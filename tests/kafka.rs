//! The Kafka sink against a real Kafka-protocol broker: Tansu 0.6 (scripts/setup installs
//! it in third_party/tansu), started by each test on a loopback port with in-memory
//! storage, read back with a real librdkafka consumer. Apache Kafka itself is in no
//! registry here and is not tested.

mod common;

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use sentistream::config::KafkaConfig;
use sentistream::event::{Output, StatusEvent, StreamStatus};
use sentistream::metrics::Metrics;
use sentistream::sinks::Sink;
use sentistream::sinks::kafka::{KafkaSink, KafkaTarget};

/// A Tansu broker; killed when dropped.
struct Broker {
    child: Child,
    port: u16,
}

fn tansu() -> Option<PathBuf> {
    let p = common::repo("third_party/tansu/tansu");
    if p.is_file() {
        Some(p)
    } else {
        common::skip(&format!("{} is not installed", p.display()));
        None
    }
}

impl Broker {
    fn start(bin: &Path, port: u16) -> Self {
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "tansu did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }

    fn url(&self, topic: &str) -> String {
        format!("kafka://127.0.0.1:{}/{topic}", self.port)
    }
}

impl Broker {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads a topic from the beginning with a new consumer group until `want` messages
/// arrived (and then one more second, to see any extra) or `timeout`; returns (key,
/// value) in arrival order.
fn consume(port: u16, topic: &str, want: usize, timeout: Duration) -> Vec<(String, String)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{port}"))
        .set("group.id", format!("test-{}", common::free_port()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let t = Instant::now();
    let mut full: Option<Instant> = None;
    while full.is_none_or(|f| f.elapsed() < Duration::from_secs(1)) && t.elapsed() < timeout {
        if full.is_none() && out.len() >= want {
            full = Some(Instant::now());
        }
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            let text = |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or(b"")).to_string();
            out.push((text(m.key()), text(m.payload())));
        }
    }
    out
}

/// Per key, the values in arrival order.
fn by_key(msgs: &[(String, String)]) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in msgs {
        m.entry(k.clone()).or_default().push(v.clone());
    }
    m
}

fn notice(stream: &str, i: usize) -> Output {
    Output::Status(StatusEvent {
        stream: stream.into(),
        status: StreamStatus::Started,
        at: i as f64,
        reason: Some(format!("n{i}")),
        emitted_at_ms: 0,
    })
}

/// The `at` numbers of one stream's messages.
fn numbers(values: &[String]) -> Vec<usize> {
    values
        .iter()
        .map(|v| {
            let j: serde_json::Value = serde_json::from_str(v).unwrap();
            j["at"].as_f64().unwrap() as usize
        })
        .collect()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn two_streams_publish_and_a_consumer_group_reads_them_in_order() {
    let Some(bin) = tansu() else { return };
    if common::model("ggml-base-q8_0.bin").is_none() {
        return;
    }
    let broker = Broker::start(&bin, common::free_port());
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    let spool = dir.path().join("spool");
    std::fs::write(
        &cfg,
        format!(
            "[sinks.kafka]\nspool_dir = {:?}\n",
            spool.display().to_string()
        ),
    )
    .unwrap();
    let jsonl = dir.path().join("all.jsonl");
    let sample = common::repo("samples/sample.mp4").display().to_string();
    let out = common::sentistream(&[
        "--config",
        cfg.to_str().unwrap(),
        "run",
        &sample,
        &sample,
        "--id",
        "left",
        "--id",
        "right",
        "--language",
        "en",
        "--sink",
        &broker.url("events"),
        "--sink",
        jsonl.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let got = consume(broker.port, "events", lines.len(), Duration::from_secs(30));
    let got = by_key(&got);
    for id in ["left", "right"] {
        let want: Vec<String> = lines
            .iter()
            .filter(|l| l.contains(&format!("\"stream\":\"{id}\"")))
            .cloned()
            .collect();
        assert!(
            want.len() >= 6,
            "{id}: started, 4 windows, ended: {want:#?}"
        );
        assert_eq!(
            got.get(id),
            Some(&want),
            "stream {id}: every event, in order"
        );
    }
    let left = std::fs::read_dir(&spool).unwrap().count();
    assert_eq!(left, 1, "only the LOCK file remains: the spool is empty");
}

/// A broker and a Kafka sink on `topic` with a spool in a temporary folder; `streams`
/// publish numbered notices.
struct Rig {
    port: u16,
    broker: Broker,
    metrics: Arc<Metrics>,
    sink: KafkaSink,
    streams: Vec<&'static str>,
    /// Rounds published so far (the next notice's number).
    n: usize,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn start(bin: &Path, topic: &str, message_timeout_s: f64, streams: &[&'static str]) -> Self {
        let port = common::free_port();
        let broker = Broker::start(bin, port);
        let dir = tempfile::tempdir().unwrap();
        let cfg = KafkaConfig {
            spool_dir: dir.path().join("spool"),
            message_timeout_s,
            close_timeout_s: 60.0,
            ..KafkaConfig::default()
        };
        let metrics = Arc::new(Metrics::default());
        let target = KafkaTarget::parse(&format!("127.0.0.1:{port}/{topic}")).unwrap();
        let sink = KafkaSink::open(&target, &cfg, metrics.clone()).unwrap();
        Self {
            port,
            broker,
            metrics,
            sink,
            streams: streams.to_vec(),
            n: 0,
            _dir: dir,
        }
    }

    /// Publishes `rounds` notices per stream, 50 ms apart.
    fn publish(&mut self, rounds: usize) {
        for _ in 0..rounds {
            for s in &self.streams {
                self.sink.write(&notice(s, self.n)).unwrap();
            }
            self.n += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the broker, publishes `rounds` while it is down and keeps it down for `down`.
    fn outage(&mut self, rounds: usize, down: Duration) {
        self.broker.kill();
        let t = Instant::now();
        self.publish(rounds);
        while t.elapsed() < down {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `n` events were delivered; then reads them (Tansu keeps topics in
    /// memory: read what it holds before it is killed).
    fn delivered(&self, topic: &str, n: u64) -> Vec<(String, String)> {
        wait_until("the deliveries", Duration::from_secs(30), || {
            self.metrics.bus()[1] == n
        });
        consume(self.port, topic, n as usize, Duration::from_secs(30))
    }
}

#[test]
fn events_produced_during_a_10_s_outage_all_arrive_in_order_after_the_restart() {
    let Some(bin) = tansu() else { return };
    let streams = ["cam1", "cam2"];
    let mut rig = Rig::start(&bin, "outage", 30.0, &streams);
    rig.publish(20);
    let before = rig.delivered("outage", 40);
    assert_eq!(before.len(), 40);
    rig.outage(100, Duration::from_secs(10));
    let metrics = rig.metrics.clone();
    assert_eq!(
        metrics.bus()[1],
        40,
        "nothing delivered while the broker is down"
    );
    assert_eq!(
        metrics.bus()[3],
        200,
        "the outage's events wait in the spool"
    );
    rig.broker = Broker::start(&bin, rig.port);
    rig.publish(10);
    rig.sink.close().unwrap();
    let [spooled, delivered, dropped, pending] = metrics.bus();
    assert_eq!((spooled, dropped, pending), (260, 0, 0));
    assert!(delivered >= 260, "{delivered}");
    let after = consume(rig.port, "outage", 220, Duration::from_secs(30));
    let all = by_key(&[before, after].concat());
    let text = metrics.render();
    assert!(text.contains("sentistream_bus_delivered_total"), "{text}");
    for s in streams {
        let got = numbers(&all[s]);
        let dups = got.len() - 130;
        let mut firsts = got.clone();
        firsts.dedup();
        assert_eq!(firsts, (0..130).collect::<Vec<_>>(), "{s}: all, in order");
        eprintln!("{s}: 130 events, {dups} delivered twice (at-least-once)");
    }
}

#[test]
fn past_the_spool_limit_events_are_dropped_counted_and_the_rest_sent_by_the_next_run() {
    let Some(bin) = tansu() else { return };
    let port = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = KafkaConfig {
        spool_dir: dir.path().join("spool"),
        spool_limit_mb: 0.01,
        close_timeout_s: 0.5,
        ..KafkaConfig::default()
    };
    let target = KafkaTarget::parse(&format!("127.0.0.1:{port}/limit")).unwrap();
    let metrics = Arc::new(Metrics::default());
    // No broker: everything waits in the spool until it is full.
    let mut sink = KafkaSink::open(&target, &cfg, metrics.clone()).unwrap();
    for i in 0..200 {
        sink.write(&notice("cam", i)).unwrap();
    }
    sink.close().unwrap();
    let [spooled, delivered, dropped, pending] = metrics.bus();
    assert_eq!(delivered, 0);
    assert_eq!(spooled + dropped, 200);
    assert!(
        (40..120).contains(&spooled),
        "10 kB holds ~60 notices: {spooled}"
    );
    assert_eq!(pending, spooled);
    assert!(
        metrics
            .render()
            .contains(&format!("sentistream_bus_dropped_total {dropped}"))
    );
    drop(sink);
    // The next run finds them in the spool and sends them once the broker is up.
    let broker = Broker::start(&bin, port);
    let metrics2 = Arc::new(Metrics::default());
    let mut sink = KafkaSink::open(&target, &cfg, metrics2.clone()).unwrap();
    wait_until("the spooled events", Duration::from_secs(30), || {
        metrics2.bus()[1] == spooled
    });
    sink.close().unwrap();
    let got = consume(
        broker.port,
        "limit",
        spooled as usize,
        Duration::from_secs(30),
    );
    let got = numbers(&by_key(&got)["cam"]);
    assert_eq!(got, (0..spooled as usize).collect::<Vec<_>>());
}

#[test]
fn a_bad_url_and_a_missing_topic_under_fail_are_clear_errors_at_start_up() {
    let Some(bin) = tansu() else { return };
    let out = common::sentistream(&["run", "x.mp4", "--sink", "kafka://localhost/events"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no port"), "{err}");
    let broker = Broker::start(&bin, common::free_port());
    let dir = tempfile::tempdir().unwrap();
    let cfg = KafkaConfig {
        spool_dir: dir.path().join("spool"),
        missing_topic: sentistream::config::TopicPolicy::Fail,
        ..KafkaConfig::default()
    };
    let target = KafkaTarget::parse(&format!("127.0.0.1:{}/absent", broker.port)).unwrap();
    let e = KafkaSink::open(&target, &cfg, Arc::new(Metrics::default()))
        .err()
        .expect("a missing topic under missing_topic = fail");
    let e = e.to_string();
    assert!(e.contains("topic absent does not exist"), "{e}");
    assert!(e.contains("missing_topic = \"create\""), "{e}");
}

#[test]
fn an_outage_longer_than_the_message_timeout_is_resent_from_the_spool_in_order() {
    let Some(bin) = tansu() else { return };
    // librdkafka gives up on a message after 2 s: the sink must rebuild its producer and
    // resend from the spool.
    let mut rig = Rig::start(&bin, "long", 2.0, &["cam"]);
    rig.publish(10);
    let before = rig.delivered("long", 10);
    rig.outage(40, Duration::from_secs(6));
    let metrics = rig.metrics.clone();
    let retries = |m: &Metrics| {
        m.render()
            .lines()
            .find_map(|l| l.strip_prefix("sentistream_bus_retries_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(
        retries(&metrics) >= 1,
        "the producer was rebuilt after the timeouts"
    );
    rig.broker = Broker::start(&bin, rig.port);
    let back = Instant::now();
    rig.publish(5);
    rig.sink.close().unwrap();
    let resent_s = back.elapsed().as_secs_f64();
    let [_, _, dropped, pending] = metrics.bus();
    assert_eq!((dropped, pending), (0, 0));
    let after = consume(rig.port, "long", 45, Duration::from_secs(30));
    let mut got = numbers(&by_key(&[before, after].concat())["cam"]);
    let n_got = got.len();
    got.dedup();
    assert_eq!(got, (0..55).collect::<Vec<_>>(), "all, in order");
    eprintln!(
        "{} retries; all delivered {resent_s:.1} s after the restart; {} of 55 delivered twice",
        retries(&metrics),
        n_got - 55
    );
}
