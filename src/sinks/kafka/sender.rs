//! The Kafka sink's sender thread: reads the spool in order, produces each record with an
//! idempotent librdkafka producer, acknowledges delivered records in the spool, and on
//! any delivery failure rebuilds the producer and resumes at the first unacknowledged
//! record.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig,
};

use super::KafkaTarget;
use super::spool::{Spool, SpoolReader};
use crate::config::{KafkaConfig, TopicPolicy};
use crate::metrics::Metrics;

/// Records handed to librdkafka and not yet reported, at most.
const MAX_INFLIGHT: usize = 10_000;
/// Wait before rebuilding a producer after a failure.
const BACKOFF: Duration = Duration::from_millis(500);
/// How long a topic check waits for the broker.
const METADATA_TIMEOUT: Duration = Duration::from_secs(3);

/// What the sender needs from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    brokers: String,
    topics: Vec<String>,
    policy: TopicPolicy,
    partitions: i32,
    replication: i32,
    message_timeout_ms: u64,
    properties: Vec<(String, String)>,
}

impl Options {
    /// Options for a target; `topics`: the events topic and the notice topic.
    pub fn new(target: &KafkaTarget, cfg: &KafkaConfig, mut topics: Vec<String>) -> Self {
        topics.dedup();
        Self {
            brokers: target.brokers.clone(),
            topics,
            policy: cfg.missing_topic,
            partitions: cfg.partitions as i32,
            replication: cfg.replication as i32,
            message_timeout_ms: (cfg.message_timeout_s * 1000.0) as u64,
            properties: cfg
                .properties
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("enable.idempotence", "true")
            .set("enable.gapless.guarantee", "true")
            .set("acks", "all")
            .set("max.in.flight.requests.per.connection", "5")
            .set("linger.ms", "5")
            .set("message.timeout.ms", self.message_timeout_ms.to_string())
            .set("allow.auto.create.topics", "false")
            .set("topic.metadata.propagation.max.ms", "2000")
            .set("reconnect.backoff.ms", "100")
            .set("reconnect.backoff.max.ms", "1000")
            .set_log_level(RDKafkaLogLevel::Warning);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

/// One delivery report.
struct Report {
    seq: u64,
    at_ms: u64,
    error: Option<KafkaError>,
}

/// librdkafka callbacks: delivery reports are collected for the sender loop; client
/// errors go to the log.
struct Context {
    reports: Mutex<Vec<Report>>,
    name: String,
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::warn!("{}: librdkafka {fac}: {msg}", self.name),
            _ => tracing::debug!("{}: librdkafka {fac}: {msg}", self.name),
        }
    }
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!("{}: {error}: {reason}", self.name);
    }
}

impl ProducerContext for Context {
    type DeliveryOpaque = Box<(u64, u64)>;
    fn delivery(&self, r: &DeliveryResult<'_>, opaque: Self::DeliveryOpaque) {
        let (seq, at_ms) = *opaque;
        let error = r.as_ref().err().map(|(e, _)| e.clone());
        self.reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Report { seq, at_ms, error });
    }
}

/// Checks that the topics exist, creating missing ones when the policy says so.
/// `Ok` when they exist or were created, and when the broker did not answer (events
/// are spooled until it does; said unless `quiet`); `Err` with what to do otherwise.
pub(crate) fn check_topics(o: &Options, quiet: bool) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = o
        .client_config()
        .create()
        .map_err(|e| format!("cannot create a Kafka client: {e}"))?;
    let mut missing = Vec::new();
    for t in &o.topics {
        match admin.inner().fetch_metadata(Some(t), METADATA_TIMEOUT) {
            Ok(md) => {
                let known = md
                    .topics()
                    .iter()
                    .any(|x| x.name() == t && x.error().is_none() && !x.partitions().is_empty());
                if !known {
                    missing.push(t.clone());
                }
            }
            Err(e) => {
                if !quiet {
                    tracing::warn!(
                        "kafka {}: the broker did not answer ({e}); events are spooled until it does",
                        o.brokers
                    );
                }
                return Ok(());
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    if o.policy == TopicPolicy::Fail {
        return Err(format!(
            "topic {} does not exist on {}; create it, or set sinks.kafka.missing_topic = \"create\"",
            missing.join(", "),
            o.brokers
        ));
    }
    create_topics(&admin, o, &missing)
}

fn create_topics(
    admin: &AdminClient<DefaultClientContext>,
    o: &Options,
    names: &[String],
) -> Result<(), String> {
    let new: Vec<NewTopic> = names
        .iter()
        .map(|n| NewTopic::new(n, o.partitions, TopicReplication::Fixed(o.replication)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let results = rt
        .block_on(admin.create_topics(new.iter(), &opts))
        .map_err(|e| format!("creating topics {names:?} failed: {e}"))?;
    for r in results {
        match r {
            Ok(t) => tracing::info!(
                "kafka {}: created topic {t} ({} partitions)",
                o.brokers,
                o.partitions
            ),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => {
                return Err(format!(
                    "creating topic {t} failed: {e}; create it yourself or check the broker's permissions"
                ));
            }
        }
    }
    Ok(())
}

/// The sender: owns the producer and the spool reader.
pub(crate) struct Sender {
    opts: Options,
    spool: Arc<Spool>,
    metrics: Arc<Metrics>,
    name: String,
}

impl Sender {
    /// A sender over a spool.
    pub fn new(opts: Options, spool: Arc<Spool>, metrics: Arc<Metrics>, name: String) -> Self {
        Self {
            opts,
            spool,
            metrics,
            name,
        }
    }

    fn build(&self) -> Result<BaseProducer<Context>, KafkaError> {
        self.opts.client_config().create_with_context(Context {
            reports: Mutex::new(Vec::new()),
            name: self.name.clone(),
        })
    }

    /// Runs until the spool is closed.
    pub fn run(self) {
        let mut episode_logged = false;
        while !self.spool.is_closed() {
            let producer = match self.build() {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!("{}: cannot create the producer: {e}", self.name);
                    std::thread::sleep(BACKOFF * 4);
                    continue;
                }
            };
            let from = self.spool.first_unacked();
            match self.session(&producer, self.spool.reader(from)) {
                Ok(()) => return,
                Err(e) => {
                    self.metrics.bus_retry();
                    if !episode_logged {
                        tracing::warn!(
                            "{}: delivery failed ({e}); events are kept in the spool and resent in order",
                            self.name
                        );
                        episode_logged = true;
                    }
                    // The broker may have come back without the topic (or the failure
                    // was a timeout that hid it): check, and create it if allowed.
                    if let Err(why) = check_topics(&self.opts, true) {
                        tracing::error!("{}: {why}", self.name);
                    }
                }
            }
            producer.purge(PurgeConfig::default().queue().inflight());
            drop(producer);
            std::thread::sleep(BACKOFF);
        }
    }

    /// Produces from `reader` until the spool closes (`Ok`) or a delivery fails.
    fn session(
        &self,
        p: &BaseProducer<Context>,
        mut reader: SpoolReader,
    ) -> Result<(), KafkaError> {
        let mut inflight = 0usize;
        let mut held = None;
        loop {
            let mut idle = true;
            while inflight < MAX_INFLIGHT {
                let rec = match held.take() {
                    Some(r) => r,
                    None => match reader.read_one(&self.spool) {
                        Ok(Some(r)) => r,
                        Ok(None) => break,
                        Err(e) => {
                            tracing::error!("{}: reading the spool failed: {e}", self.name);
                            break;
                        }
                    },
                };
                if self.spool.is_acked(rec.seq) {
                    continue;
                }
                let record = BaseRecord::with_opaque_to(&rec.topic, Box::new((rec.seq, rec.at_ms)))
                    .key(rec.key.as_bytes())
                    .payload(rec.value.as_slice());
                match p.send(record) {
                    Ok(()) => {
                        inflight += 1;
                        idle = false;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        held = Some(rec);
                        break;
                    }
                    Err((e, _)) => return Err(e),
                }
            }
            p.poll(Duration::from_millis(if inflight > 0 { 10 } else { 0 }));
            let reports = std::mem::take(
                &mut *p
                    .context()
                    .reports
                    .lock()
                    .unwrap_or_else(|x| x.into_inner()),
            );
            let mut failure = None;
            for r in reports {
                inflight = inflight.saturating_sub(1);
                match r.error {
                    None => {
                        self.spool.ack(r.seq);
                        let lat = crate::event::now_ms().saturating_sub(r.at_ms) as f64 / 1e3;
                        self.metrics.bus_delivered(lat);
                    }
                    Some(e) => {
                        failure.get_or_insert(e);
                    }
                }
            }
            self.metrics.bus_pending(self.spool.pending());
            if let Some(e) = failure {
                return Err(e);
            }
            if let Some((code, reason)) = p.client().fatal_error() {
                return Err(KafkaError::MessageProduction(code)).inspect_err(|_| {
                    tracing::debug!("{}: fatal producer error: {reason}", self.name)
                });
            }
            if self.spool.is_closed() {
                return Ok(());
            }
            if idle && inflight == 0 && held.is_none() {
                self.spool
                    .wait_for(reader.position(), Duration::from_millis(100));
            }
        }
    }
}
