//! Stages 2/3 at run time: queue policies and deadlines with a slow backend, event order,
//! worker failures, the OpenAI-compatible backend against a real local HTTP server that
//! misbehaves on purpose, and a real TorchScript module.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use sentistream::cascade::backend::{
    Backend, BackendError, Deferred, OpenAiBackend, TorchScriptBackend,
};
use sentistream::cascade::{Cascade, CascadeSettings, Pool, WhenFull};
use sentistream::error::ModelError;
use sentistream::event::{Event, FallbackReason, Polarity, Sentiment, Stage};
use sentistream::features::WindowFeatures;
use sentistream::models::mllm::Answer;
use sentistream::routing::fusion::{Policy, Verdict};
use sentistream::routing::uncertainty::entropy;

/// A backend that takes `delay` per pass and answers `score` with fixed probabilities;
/// panics on a text of "panic" and fails on "fail".
struct Slow {
    delay: Duration,
    probs: [f32; 3],
    score: f32,
}

impl Backend for Slow {
    fn name(&self) -> &'static str {
        "slow"
    }
    fn band(&self) -> f32 {
        0.1
    }
    fn judge(
        &mut self,
        text: &str,
        _f: &WindowFeatures,
        earlier: Option<(Verdict, Verdict)>,
    ) -> Result<Answer, BackendError> {
        std::thread::sleep(self.delay);
        match text {
            "panic" => panic!("backend bug"),
            "fail" => {
                return Err(BackendError::Failed {
                    backend: "slow",
                    reason: "injected".into(),
                });
            }
            _ => {}
        }
        // The cross-verification pass answers with more confidence.
        let probs = if earlier.is_some() {
            [0.05, 0.05, 0.9]
        } else {
            self.probs
        };
        Ok(Answer {
            score: self.score,
            probs,
            uncertainty: entropy(&probs),
            prompt_tokens: 0,
        })
    }
}

fn slow(ms: u64) -> Box<dyn Backend> {
    Box::new(Slow {
        delay: Duration::from_millis(ms),
        probs: [0.02, 0.03, 0.95],
        score: 1.5,
    })
}

fn event(seq: u64, text: &str) -> Event {
    let mut e = Event::transcribed("s", seq, seq as f64, seq as f64 + 1.0);
    e.text = text.into();
    e
}

/// The small model's verdict: score 0.8 with uncertainty `u`.
fn small(u: f32) -> Sentiment {
    Sentiment::small(0.8, Polarity::Positive, [0.2, 0.3, 0.5], u)
}

fn settings(deadline: Option<Duration>) -> CascadeSettings {
    CascadeSettings {
        tau1: 0.5,
        band: 0.1,
        deadline,
        max_held: 1000,
    }
}

/// Offers `n` windows, every other one uncertain (escalated); returns the emitted events.
fn run(cascade: &mut Cascade, n: u64, text: &str) -> Vec<Event> {
    let mut out = Vec::new();
    for i in 0..n {
        let u = if i % 2 == 0 { 0.9 } else { 0.1 };
        cascade.submit(
            0,
            event(i, text),
            small(u),
            WindowFeatures::default(),
            Instant::now(),
            &mut |e| out.push(e),
        );
    }
    cascade.finish(&mut |e| out.push(e));
    out
}

fn assert_in_order(events: &[Event], n: u64) {
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (0..n).collect::<Vec<_>>(),
        "every window once, in order"
    );
}

#[test]
fn block_policy_escalates_everything_in_order() {
    let pool = Pool::start(vec![slow(20)], 2, WhenFull::Block, 0.4, Policy::Full);
    let mut c = Cascade::new(pool, settings(None));
    let ev = run(&mut c, 20, "fine words");
    assert_in_order(&ev, 20);
    for (i, e) in ev.iter().enumerate() {
        if i % 2 == 0 {
            assert_eq!(e.stage, Some(Stage::Mllm), "{e:?}");
            assert!(e.latency_ms.mllm > 0.0, "{:?}", e.latency_ms);
            assert_eq!(e.mllm.as_ref().unwrap().score, 1.5);
        } else {
            assert_eq!(e.stage, Some(Stage::Ubm));
        }
    }
}

#[test]
fn drop_newest_falls_back_when_full_and_keeps_order() {
    let pool = Pool::start(vec![slow(100)], 1, WhenFull::DropNewest, 0.4, Policy::Full);
    let mut c = Cascade::new(pool, settings(None));
    let ev = run(&mut c, 30, "fine words");
    assert_in_order(&ev, 30);
    let full = ev
        .iter()
        .filter(|e| e.fallback_reason == Some(FallbackReason::QueueFull))
        .count();
    let served = ev.iter().filter(|e| e.stage == Some(Stage::Mllm)).count();
    assert!(
        full >= 10,
        "most of 15 escalations offered at once are dropped: {full}"
    );
    assert_eq!(full + served, 15, "each escalation is served or falls back");
    for e in ev.iter().filter(|e| e.stage == Some(Stage::UbmFallback)) {
        assert_eq!(
            e.score,
            Some(0.8),
            "the fallback keeps the small model's verdict"
        );
    }
}

/// A backend that answers only when the test opens its gate; it records whether it has.
struct Gated {
    gate: crossbeam_channel::Receiver<()>,
    answered: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Backend for Gated {
    fn name(&self) -> &'static str {
        "gated"
    }
    fn band(&self) -> f32 {
        0.1
    }
    fn judge(
        &mut self,
        _text: &str,
        _f: &WindowFeatures,
        _earlier: Option<(Verdict, Verdict)>,
    ) -> Result<Answer, BackendError> {
        // The timeout only keeps a broken test from hanging forever.
        let _ = self.gate.recv_timeout(Duration::from_secs(120));
        self.answered
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Err(BackendError::Failed {
            backend: "gated",
            reason: "answered after the gate opened".into(),
        })
    }
}

#[test]
fn deadline_falls_back_without_waiting_for_the_worker() {
    let (open, gate) = crossbeam_channel::unbounded();
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let backend = Gated {
        gate,
        answered: answered.clone(),
    };
    let pool = Pool::start(
        vec![Box::new(backend)],
        8,
        WhenFull::Block,
        0.4,
        Policy::Full,
    );
    let mut c = Cascade::new(pool, settings(Some(Duration::from_millis(50))));
    let ev = run(&mut c, 4, "fine words");
    // Every event was emitted while the worker was still blocked: the deadline, not the
    // backend, ended the wait.
    assert!(!answered.load(std::sync::atomic::Ordering::SeqCst));
    assert_in_order(&ev, 4);
    assert_eq!(ev[0].fallback_reason, Some(FallbackReason::Deadline));
    assert_eq!(ev[2].fallback_reason, Some(FallbackReason::Deadline));
    assert_eq!(ev[1].stage, Some(Stage::Ubm));
    for _ in 0..2 {
        open.send(()).unwrap();
    }
}

#[test]
fn worker_failures_fall_back_and_the_pipeline_continues() {
    for (text, reason) in [
        ("panic", FallbackReason::WorkerPanic),
        ("fail", FallbackReason::BackendError),
    ] {
        let pool = Pool::start(vec![slow(1)], 4, WhenFull::Block, 0.4, Policy::Full);
        let mut c = Cascade::new(pool, settings(None));
        let ev = run(&mut c, 6, text);
        assert_in_order(&ev, 6);
        for e in ev.iter().step_by(2) {
            assert_eq!(e.stage, Some(Stage::UbmFallback));
            assert_eq!(e.fallback_reason, Some(reason));
        }
    }
}

#[test]
fn a_deferred_backend_loads_on_its_worker_before_the_first_window() {
    // It loads when the worker starts, on the worker's thread, once; the load is not
    // counted as a window's large-model time, and every window gets the loaded model.
    let (tx, rx) = crossbeam_channel::unbounded();
    let deferred = Deferred::new(
        "slow",
        0.1,
        Box::new(move || {
            tx.send(std::thread::current().name().map(String::from))
                .unwrap();
            std::thread::sleep(Duration::from_millis(150));
            Ok(slow(1))
        }),
    );
    let pool = Pool::start(
        vec![Box::new(deferred)],
        4,
        WhenFull::Block,
        0.4,
        Policy::Full,
    );
    let mut c = Cascade::new(pool, settings(None));
    let ev = run(&mut c, 6, "fine words");
    assert_in_order(&ev, 6);
    let loads: Vec<_> = rx.try_iter().collect();
    assert_eq!(
        loads,
        vec![Some("mllm-0".to_string())],
        "loaded once, by the worker"
    );
    for e in ev.iter().step_by(2) {
        assert_eq!(e.stage, Some(Stage::Mllm), "{e:?}");
        assert!(
            e.latency_ms.mllm < 100.0,
            "the load is not a window's latency: {e:?}"
        );
    }

    // A model that fails to load (after its files were checked): each window keeps the
    // small model's verdict, saying why, and the stream goes on.
    let failing = Deferred::new(
        "broken",
        0.1,
        Box::new(|| {
            Err(ModelError::Runtime {
                name: "broken".into(),
                reason: "injected read error".into(),
            })
        }),
    );
    let pool = Pool::start(
        vec![Box::new(failing)],
        4,
        WhenFull::Block,
        0.4,
        Policy::Full,
    );
    let mut c = Cascade::new(pool, settings(None));
    let ev = run(&mut c, 4, "fine words");
    assert_in_order(&ev, 4);
    for e in ev.iter().step_by(2) {
        assert_eq!(e.stage, Some(Stage::UbmFallback), "{e:?}");
        assert_eq!(e.fallback_reason, Some(FallbackReason::BackendError));
    }
}

#[test]
fn uncertain_large_model_fuses_or_cross_verifies() {
    // Large model uncertain (u ~ 1.0 > tau2 0.4): same polarity as the small model fuses,
    // opposite polarity asks again (the second pass is final).
    let uncertain = |score| -> Box<dyn Backend> {
        Box::new(Slow {
            delay: Duration::from_millis(1),
            probs: [0.3, 0.3, 0.4],
            score,
        })
    };
    let pool = Pool::start(vec![uncertain(1.2)], 4, WhenFull::Block, 0.4, Policy::Full);
    let mut c = Cascade::new(pool, settings(None));
    let ev = run(&mut c, 2, "x");
    assert_eq!(ev[0].stage, Some(Stage::Fused));
    let s = ev[0].score.unwrap();
    assert!(s > 0.8 && s < 1.2, "between the two opinions: {s}");
    let pool = Pool::start(vec![uncertain(-1.2)], 4, WhenFull::Block, 0.4, Policy::Full);
    let mut c = Cascade::new(pool, settings(None));
    let ev = run(&mut c, 2, "x");
    assert_eq!(ev[0].stage, Some(Stage::CrossVerified));
    assert!((ev[0].probs.unwrap().positive - 0.9).abs() < 1e-6);
}

#[test]
fn live_bursts_skip_second_passes_while_others_wait() {
    // Three escalations at once, each one a disagreement that stage 3 would ask again.
    // Live (drop_newest): while others wait, a window is fused instead of getting a
    // second pass; the last, with nobody waiting, is cross-verified. Files (block): every
    // window gets its second pass, whatever the timing.
    let disagreeing = || -> Box<dyn Backend> {
        Box::new(Slow {
            delay: Duration::from_millis(60),
            probs: [0.4, 0.3, 0.3],
            score: -1.2,
        })
    };
    let stages = |when_full| {
        let pool = Pool::start(vec![disagreeing()], 8, when_full, 0.4, Policy::Full);
        let mut c = Cascade::new(pool, settings(None));
        let ev = run(&mut c, 6, "x");
        assert_in_order(&ev, 6);
        ev.iter().step_by(2).map(|e| e.stage).collect::<Vec<_>>()
    };
    let cross = Some(Stage::CrossVerified);
    assert_eq!(stages(WhenFull::Block), vec![cross; 3]);
    assert_eq!(
        stages(WhenFull::DropNewest),
        vec![Some(Stage::Fused), Some(Stage::Fused), cross]
    );
}

/// Counts how many passes run at the same time.
struct Counting {
    inner: Slow,
    now: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    max: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Backend for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }
    fn band(&self) -> f32 {
        0.1
    }
    fn judge(
        &mut self,
        text: &str,
        f: &WindowFeatures,
        earlier: Option<(Verdict, Verdict)>,
    ) -> Result<Answer, BackendError> {
        use std::sync::atomic::Ordering::SeqCst;
        let n = self.now.fetch_add(1, SeqCst) + 1;
        self.max.fetch_max(n, SeqCst);
        let r = self.inner.judge(text, f, earlier);
        self.now.fetch_sub(1, SeqCst);
        r
    }
}

#[test]
fn two_workers_serve_in_parallel_and_order_holds() {
    let now = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let max = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let backends: Vec<Box<dyn Backend>> = (0..2)
        .map(|_| {
            Box::new(Counting {
                inner: Slow {
                    delay: Duration::from_millis(60),
                    probs: [0.02, 0.03, 0.95],
                    score: 1.5,
                },
                now: now.clone(),
                max: max.clone(),
            }) as Box<dyn Backend>
        })
        .collect();
    let pool = Pool::start(backends, 4, WhenFull::Block, 0.4, Policy::Full);
    let mut c = Cascade::new(pool, settings(None));
    let ev = run(&mut c, 20, "fine words");
    assert_in_order(&ev, 20);
    assert_eq!(
        max.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "both workers served at once"
    );
}

/// A one-connection-at-a-time HTTP server on loopback; `reply(body)` gives the raw
/// response, or `None` to close without answering.
fn server(reply: fn(&str) -> Option<String>, delay: Duration) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read the head and the body (content-length).
            loop {
                let n = s.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(i) = text.find("\r\n\r\n") {
                    let len: usize = text
                        .lines()
                        // Header names are case-insensitive (HTTP/1.1).
                        .find_map(|l| {
                            l.split_once(':')
                                .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                        })
                        .and_then(|(_, v)| v.trim().parse().ok())
                        .unwrap_or(0);
                    if buf.len() >= i + 4 + len {
                        break;
                    }
                }
            }
            std::thread::sleep(delay);
            let text = String::from_utf8_lossy(&buf).to_string();
            let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
            if let Some(r) = reply(&body) {
                let _ = s.write_all(r.as_bytes());
            }
        }
    });
    format!("http://{addr}/v1/chat/completions")
}

fn ok(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn logprobs_reply(req: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(req).ok()?;
    assert_eq!(v["logprobs"], true);
    let user = v["messages"][1]["content"].as_str()?;
    assert!(user.contains("great day"), "{user}");
    Some(ok(
        r#"{"choices":[{"message":{"content":"positive"},"logprobs":{"content":[{"token":"positive","logprob":-0.1,"top_logprobs":[{"token":"positive","logprob":-0.1},{"token":" negative","logprob":-2.5},{"token":"Neutral","logprob":-3.0},{"token":"the","logprob":-4.0}]}]}}]}"#,
    ))
}

fn plain_reply(_: &str) -> Option<String> {
    Some(ok(r#"{"choices":[{"message":{"content":"Negative."}}]}"#))
}

fn error_reply(_: &str) -> Option<String> {
    Some("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 8\r\n\r\noverload".into())
}

fn garbage_reply(_: &str) -> Option<String> {
    Some(ok("{\"choices\": [ this is not json"))
}

fn wrong_word_reply(_: &str) -> Option<String> {
    Some(ok(
        r#"{"choices":[{"message":{"content":"I cannot tell."}}]}"#,
    ))
}

fn hang_up(_: &str) -> Option<String> {
    None
}

fn remote(url: &str, timeout_ms: u64) -> OpenAiBackend {
    OpenAiBackend::new(
        url,
        "m",
        sentistream::config::RemoteApi::Openai,
        None,
        Duration::from_millis(timeout_ms),
        0.1,
        3.0,
    )
    .unwrap()
}

#[test]
fn openai_backend_reads_label_word_logprobs_and_plain_answers() {
    let f = WindowFeatures::default();
    let mut b = remote(&server(logprobs_reply, Duration::ZERO), 2000);
    let a = b.judge("what a great day", &f, None).unwrap();
    assert!(a.probs[2] > 0.8 && a.probs[0] > a.probs[1], "{a:?}");
    assert!((a.probs.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    assert!(a.score > 2.0);
    let mut b = remote(&server(plain_reply, Duration::ZERO), 2000);
    let a = b.judge("bad", &f, None).unwrap();
    assert!(
        (a.probs[0] - 0.8).abs() < 1e-6 && (a.probs[2] - 0.1).abs() < 1e-6,
        "{a:?}"
    );
}

#[test]
fn misbehaving_endpoint_falls_back_with_the_reason_and_the_pipeline_continues() {
    // A closed port: bind, learn the address, drop the listener.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/v1/chat/completions", l.local_addr().unwrap())
    };
    use FallbackReason::{BackendTimeout, BackendUnreachable, MalformedOutput};
    let cases: Vec<(String, u64, FallbackReason)> = vec![
        (closed, 500, BackendUnreachable),
        (
            server(error_reply, Duration::ZERO),
            2000,
            BackendUnreachable,
        ),
        (server(garbage_reply, Duration::ZERO), 2000, MalformedOutput),
        (
            server(wrong_word_reply, Duration::ZERO),
            2000,
            MalformedOutput,
        ),
        (server(hang_up, Duration::ZERO), 2000, BackendUnreachable),
        (
            server(logprobs_reply, Duration::from_millis(800)),
            200,
            BackendTimeout,
        ),
    ];
    for (url, timeout, reason) in cases {
        let pool = Pool::start(
            vec![Box::new(remote(&url, timeout))],
            4,
            WhenFull::Block,
            0.4,
            Policy::Full,
        );
        let mut c = Cascade::new(pool, settings(None));
        let ev = run(&mut c, 4, "what a great day");
        assert_in_order(&ev, 4);
        assert_eq!(ev[0].stage, Some(Stage::UbmFallback), "{url}");
        assert_eq!(ev[0].fallback_reason, Some(reason), "{url}");
        assert_eq!(ev[1].stage, Some(Stage::Ubm));
    }
}

#[test]
fn torchscript_backend_follows_the_contract() {
    use tch::{CModule, Tensor};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.pt");
    // A real TorchScript module traced from a closure: logits from the mean audio frame.
    let inputs = [
        Tensor::zeros([1, 384], (tch::Kind::Float, tch::Device::Cpu)),
        Tensor::ones([1, 10, 47], (tch::Kind::Float, tch::Device::Cpu)),
        Tensor::ones([1, 3, 11], (tch::Kind::Float, tch::Device::Cpu)),
        Tensor::zeros([1, 4], (tch::Kind::Float, tch::Device::Cpu)),
    ];
    let mut f = |x: &[Tensor]| {
        let a = x[1].mean_dim(1, false, tch::Kind::Float); // [1, 47]
        let s = a
            .narrow(1, 0, 1)
            .sum_dim_intlist(1, false, tch::Kind::Float); // [1]
        vec![
            Tensor::cat(
                &[-&s, s.zeros_like(), s.shallow_clone(), s.shallow_clone()],
                0,
            )
            .view([1, 4]),
        ]
    };
    let m = CModule::create_by_tracing("M", "forward", &inputs, &mut f).unwrap();
    m.save(&path).unwrap();
    let mut b = TorchScriptBackend::load(&path, 0.1, 3.0).unwrap();
    let feats = WindowFeatures {
        text: None,
        audio: vec![2.0; 5 * 47],
        visual: vec![],
        pitch_ref: None,
    };
    let a = b.judge("", &feats, None).unwrap();
    assert!(a.probs[2] > 0.85 && (a.score - 2.0).abs() < 1e-5, "{a:?}");
    // Not a module: a clear error at load time.
    std::fs::write(dir.path().join("bad.pt"), b"not a module").unwrap();
    let e = TorchScriptBackend::load(&dir.path().join("bad.pt"), 0.1, 3.0)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("bad.pt") && e.contains("TorchScript"), "{e}");
}
