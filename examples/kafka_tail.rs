//! Reads every partition of a Kafka topic from the beginning (assigned directly, so no
//! group rebalance delays the first messages; it waits for the topic to exist) and writes
//! every message
//! as a JSON line `{"recv_ms":..,"key":..,"partition":..,"offset":..,"value":<event>}`,
//! until no message has come for IDLE seconds (after the first one), flushing each line.
//! Used by scripts/bench-fleet.
//!
//!   cargo run --release --example kafka_tail -- BROKERS TOPIC OUT.jsonl [IDLE_S]

use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: kafka_tail BROKERS TOPIC OUT.jsonl [IDLE_S]");
        std::process::exit(2);
    }
    let idle = Duration::from_secs_f64(args.get(4).map_or(15.0, |s| s.parse().expect("IDLE_S")));
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args[1])
        .set("group.id", format!("kafka-tail-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let topic = &args[2];
    let partitions = loop {
        let md = c.fetch_metadata(Some(topic), Duration::from_secs(5));
        let n = md.ok().and_then(|md| {
            md.topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map(|t| t.partitions().len())
        });
        match n {
            Some(n) if n > 0 => break n,
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    c.assign(&tpl).expect("assign");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&args[3]).expect("create OUT"));
    let mut last: Option<Instant> = None;
    let mut n = 0u64;
    while last.is_none_or(|l| l.elapsed() < idle) {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let recv_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let value = m.payload().unwrap_or(b"null");
                let key = String::from_utf8_lossy(m.key().unwrap_or(b""));
                writeln!(
                    out,
                    "{{\"recv_ms\":{recv_ms},\"key\":{},\"partition\":{},\"offset\":{},\"value\":{}}}",
                    serde_json::Value::String(key.into_owned()),
                    m.partition(),
                    m.offset(),
                    String::from_utf8_lossy(value)
                )
                .expect("write");
                // Flushed per message: the benchmark may stop this process at any time.
                out.flush().expect("flush");
                n += 1;
                last = Some(Instant::now());
            }
            Some(Err(e)) => eprintln!("kafka_tail: {e}"),
            None => {}
        }
    }
    out.flush().expect("flush");
    eprintln!("kafka_tail: {n} messages from {} into {}", args[2], args[3]);
}
