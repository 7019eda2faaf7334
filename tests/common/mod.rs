//! Helpers shared by the integration tests: where the installed models are, running the
//! real binary, making small media files with real GStreamer pipelines.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The models folder the tests use (the one scripts/setup fills).
pub fn models_dir() -> PathBuf {
    std::env::var_os("SENTISTREAM_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models"))
}

/// A test cannot run because something setup installs is missing. Under CI (`CI` set)
/// that is a broken setup, so the test fails with the reason; elsewhere it says it
/// skipped and why.
pub fn skip(reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{reason}; CI runs scripts/setup first, so the setup is broken");
    }
    eprintln!("SKIPPED: {reason}; run scripts/setup");
}

/// Path of an installed model file, or `None` (see [`skip`]: a failure under CI) when
/// setup has not installed it.
pub fn model(name: &str) -> Option<PathBuf> {
    let p = models_dir().join(name);
    if p.is_file() {
        Some(p)
    } else {
        skip(&format!("{} is not installed", p.display()));
        None
    }
}

/// Path of a file in the repository.
pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Arguments of `annotate` on the bundled sample (English, no progress bar), writing
/// each of `outs` as it goes.
pub fn annotate_sample(outs: &[&Path]) -> Vec<String> {
    let mut args: Vec<String> = ["annotate", "--language", "en", "--no-progress"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.insert(1, repo("samples/sample.mp4").display().to_string());
    for o in outs {
        args.push("--out".into());
        args.push(o.display().to_string());
    }
    args
}

/// Runs the real sentistream binary.
pub fn sentistream(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sentistream"))
        .args(args)
        .env("SENTISTREAM_MODELS", models_dir())
        .env("RUST_LOG", "sentistream=warn")
        .output()
        .expect("run sentistream")
}

/// Writes a media file with a real GStreamer launch line ending in `filesink`.
pub fn make_media(launch: &str, out: &Path) {
    gstreamer::init().unwrap();
    let desc = format!("{launch} ! filesink location={}", out.display());
    let pipeline = gstreamer::parse::launch(&desc).expect("valid test pipeline");
    use gstreamer::prelude::*;
    pipeline.set_state(gstreamer::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gstreamer::ClockTime::from_seconds(60),
            &[gstreamer::MessageType::Eos, gstreamer::MessageType::Error],
        )
        .expect("test pipeline finished");
    pipeline.set_state(gstreamer::State::Null).unwrap();
    if let gstreamer::MessageView::Error(e) = msg.view() {
        panic!("test pipeline {desc} failed: {}", e.error());
    }
}

/// The integers of a JSON array (token ids of a reference file or server reply).
pub fn i64s(v: &serde_json::Value) -> Vec<i64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a JSON array: {v}"))
        .iter()
        .map(|x| x.as_i64().unwrap_or_else(|| panic!("not an integer: {x}")))
        .collect()
}

/// Every JSON line of stdout (windows, notices, call summaries).
pub fn outputs(out: &Output) -> Vec<serde_json::Value> {
    json_lines(&String::from_utf8_lossy(&out.stdout))
}

/// The window events of stdout (lines with a `seq`).
pub fn events(out: &Output) -> Vec<serde_json::Value> {
    events_in(&String::from_utf8_lossy(&out.stdout))
}

/// The window events (lines with a `seq`) of a run's stdout, as `sentistream_ok` returns it.
pub fn events_in(stdout: &str) -> Vec<serde_json::Value> {
    json_lines(stdout)
        .into_iter()
        .filter(|e| e.get("seq").is_some())
        .collect()
}

fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

/// Word error rate of `hyp` against `reference` (lower-case, punctuation removed).
pub fn wer(reference: &str, hyp: &str) -> f64 {
    let words = |s: &str| -> Vec<String> {
        s.to_lowercase()
            .chars()
            .map(|c| {
                if c.is_alphanumeric() || c == '\'' {
                    c
                } else {
                    ' '
                }
            })
            .collect::<String>()
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let (r, h) = (words(reference), words(hyp));
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for i in 1..=r.len() {
        let mut cur = vec![i; h.len() + 1];
        for j in 1..=h.len() {
            let sub = prev[j - 1] + usize::from(r[i - 1] != h[j - 1]);
            cur[j] = sub.min(prev[j] + 1).min(cur[j - 1] + 1);
        }
        prev = cur;
    }
    prev[h.len()] as f64 / r.len().max(1) as f64
}

/// Runs sentistream, asserts success (showing stderr otherwise), returns stdout.
pub fn sentistream_ok(args: &[&str]) -> String {
    let out = sentistream(args);
    assert!(
        out.status.success(),
        "sentistream {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running llm-server; killed when dropped.
pub struct LlmServer {
    child: Child,
    port: u16,
}

impl LlmServer {
    pub fn start(model: &Path, port: u16) -> Self {
        let mut child = Command::new(repo("scripts/llm-server"))
            .arg(model)
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start scripts/llm-server");
        let out = child.stdout.take().unwrap();
        let mut lines = BufReader::new(out).lines();
        let t = Instant::now();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("listening") => break,
                Some(_) => {}
                None => panic!("llm-server exited before listening"),
            }
            assert!(t.elapsed() < Duration::from_secs(60), "llm-server too slow");
        }
        assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
        Self { child, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/chat/completions", self.port)
    }
}

impl Drop for LlmServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
