//! Events to Kafka (`--sink kafka://HOST:PORT[,HOST:PORT]/TOPIC`), with librdkafka
//! (the `rdkafka` crate, bundled).
//!
//! Every event is first appended to a bounded on-disk [`spool`]; a sender thread reads
//! the spool in order and produces it (key = stream id, so each stream keeps its order in
//! one partition; value = the event's JSON; stream notices go to
//! `sinks.kafka.notice_topic`). The producer is idempotent with `acks=all` and the gapless
//! guarantee, so a failure can never let a later event of a partition land before an
//! earlier one: on any delivery failure the producer is rebuilt and sending resumes at
//! the first unacknowledged record (at-least-once: an event whose acknowledgement was
//! lost may arrive twice). A record leaves the spool once the broker has acknowledged
//! it. While the broker is unreachable events accumulate in the spool; past
//! `sinks.kafka.spool_limit_mb` new events are dropped, counted and announced. What is
//! still unsent when the process ends stays in the spool folder and is sent by the next
//! run that uses it.

pub(crate) mod sender;
pub(crate) mod spool;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::KafkaConfig;
use crate::error::SinkError;
use crate::event::Output;
use crate::metrics::Metrics;
use crate::sinks::Sink;
use spool::{AppendOutcome, Spool};

/// Where to publish, from `kafka://HOST:PORT[,HOST:PORT...]/TOPIC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaTarget {
    /// Bootstrap servers, `host:port` separated by commas.
    pub brokers: String,
    /// Topic for window events.
    pub topic: String,
}

/// Characters Kafka allows in a topic name.
fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl KafkaTarget {
    /// Parses the part after `kafka://`.
    pub fn parse(rest: &str) -> Result<Self, String> {
        let (brokers, topic) = rest
            .split_once('/')
            .ok_or("no topic; expected kafka://HOST:PORT/TOPIC")?;
        if brokers.is_empty() {
            return Err("no broker; expected kafka://HOST:PORT/TOPIC".into());
        }
        for b in brokers.split(',') {
            let (host, port) = b
                .rsplit_once(':')
                .ok_or_else(|| format!("broker {b:?} has no port; expected HOST:PORT"))?;
            if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(format!("broker {b:?} is not HOST:PORT with a port 1-65535"));
            }
        }
        let topic = topic.trim_end_matches('/');
        if !valid_topic(topic) {
            return Err(format!(
                "topic {topic:?} is not a valid Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)"
            ));
        }
        Ok(Self {
            brokers: brokers.to_string(),
            topic: topic.to_string(),
        })
    }

    /// The notice topic: `sinks.kafka.notice_topic`, or the events topic when empty.
    pub fn notice_topic<'a>(&'a self, cfg: &'a KafkaConfig) -> &'a str {
        if cfg.notice_topic.is_empty() {
            &self.topic
        } else {
            &cfg.notice_topic
        }
    }
}

/// The Kafka sink: appends to the spool; the sender thread does the rest.
pub struct KafkaSink {
    name: String,
    events_topic: String,
    notice_topic: String,
    spool: Arc<Spool>,
    metrics: Arc<Metrics>,
    sender: Option<JoinHandle<()>>,
    close_timeout: Duration,
    line: Vec<u8>,
    dropped: u64,
}

impl KafkaSink {
    /// Checks the target, opens the spool, checks the topics on the broker (creating them
    /// when `missing_topic = "create"`), and starts the sender. An unreachable broker is
    /// not an error: events are spooled until it answers.
    pub fn open(
        target: &KafkaTarget,
        cfg: &KafkaConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, SinkError> {
        let name = format!("kafka://{}/{}", target.brokers, target.topic);
        let notice_topic = target.notice_topic(cfg).to_string();
        if !valid_topic(&notice_topic) {
            return Err(SinkError::Spec {
                spec: name,
                reason: format!(
                    "sinks.kafka.notice_topic {notice_topic:?} is not a valid Kafka topic name"
                ),
            });
        }
        let spool = Arc::new(Spool::open(
            &cfg.spool_dir,
            (cfg.spool_limit_mb * 1024.0 * 1024.0) as u64,
        )?);
        let (left, bytes) = spool.pending();
        if left > 0 {
            tracing::info!(
                "{name}: {left} events ({bytes} bytes) left unsent by an earlier run are sent first"
            );
        }
        let topics = vec![target.topic.clone(), notice_topic.clone()];
        let opts = sender::Options::new(target, cfg, topics);
        sender::check_topics(&opts, false).map_err(|reason| SinkError::Spec {
            spec: name.clone(),
            reason,
        })?;
        metrics.bus_pending(spool.pending());
        let s = sender::Sender::new(opts, spool.clone(), metrics.clone(), name.clone());
        let handle = std::thread::Builder::new()
            .name("kafka-sender".into())
            .spawn(move || s.run())
            .map_err(|e| SinkError::Io {
                target: name.clone(),
                source: e,
            })?;
        Ok(Self {
            name,
            events_topic: target.topic.clone(),
            notice_topic,
            spool,
            metrics,
            sender: Some(handle),
            close_timeout: Duration::from_secs_f64(cfg.close_timeout_s),
            line: Vec::with_capacity(1024),
            dropped: 0,
        })
    }
}

impl Sink for KafkaSink {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn write(&mut self, out: &Output) -> Result<(), SinkError> {
        self.line.clear();
        let topic = match out {
            Output::Window(_) => &self.events_topic,
            Output::Status(_) | Output::Summary(_) => &self.notice_topic,
        };
        out.write_json(&mut self.line).map_err(|e| SinkError::Io {
            target: self.name.clone(),
            source: e.into(),
        })?;
        match self.spool.append(topic, out.stream(), &self.line) {
            Ok(_) => {
                self.metrics.bus_spooled();
                Ok(())
            }
            Err(AppendOutcome::Full) => {
                self.dropped += 1;
                self.metrics.bus_dropped();
                if self.dropped.is_power_of_two() {
                    tracing::error!(
                        "{}: the spool is full (sinks.kafka.spool_limit_mb): {} events dropped so far; is the broker reachable?",
                        self.name,
                        self.dropped
                    );
                }
                Ok(())
            }
            Err(AppendOutcome::Io(e)) => Err(e),
        }
    }

    fn close(&mut self) -> Result<(), SinkError> {
        let deadline = Instant::now() + self.close_timeout;
        while self.spool.pending().0 > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.spool.close();
        if let Some(h) = self.sender.take() {
            let _ = h.join();
        }
        let (left, _) = self.spool.pending();
        if left > 0 {
            tracing::warn!(
                "{}: {left} events were not acknowledged within {:.0} s; they stay in the spool and are sent by the next run",
                self.name,
                self.close_timeout.as_secs_f64()
            );
        }
        if self.dropped > 0 {
            tracing::error!(
                "{}: {} events were dropped because the spool was full",
                self.name,
                self.dropped
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_bad_ones_say_why() {
        let t = KafkaTarget::parse("127.0.0.1:9092,b:9093/events.v1").unwrap();
        assert_eq!(t.brokers, "127.0.0.1:9092,b:9093");
        assert_eq!(t.topic, "events.v1");
        for (bad, why) in [
            ("127.0.0.1:9092", "no topic"),
            ("/t", "no broker"),
            ("host/t", "no port"),
            ("host:0/t", "port 1-65535"),
            ("host:x/t", "port 1-65535"),
            ("h:1/a b", "not a valid Kafka topic"),
            ("h:1/", "not a valid Kafka topic"),
        ] {
            let e = KafkaTarget::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
