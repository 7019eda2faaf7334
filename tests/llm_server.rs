//! The remote large-model backend against a real LLM server: llama.cpp's OpenAI-compatible
//! server (embedded in xllamacpp, which scripts/setup installs; scripts/llm-server starts
//! it) serving the GGUF that `models export-llm` writes (SmolLM2 with the trained LoRA
//! merged), started by each test on a loopback port.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sentistream::cascade::backend::{Backend, BackendError, LocalBackend, OpenAiBackend};
use sentistream::config::RemoteApi;
use sentistream::features::WindowFeatures;
use sentistream::models::mllm::Mllm;
use serde_json::Value;

/// The installed pieces, or `None` (skip; a failure under CI).
fn ready() -> Option<()> {
    let py = common::repo("third_party/xllamacpp/bin/python");
    if !py.is_file() {
        common::skip(&format!("{} is not installed", py.display()));
        return None;
    }
    common::model("SmolLM2-135M-Instruct.Q4_1.gguf")?;
    common::model("mllm-adapter.safetensors")?;
    Some(())
}

/// The exported GGUF, written once per test binary.
fn exported() -> &'static PathBuf {
    static GGUF: OnceLock<PathBuf> = OnceLock::new();
    GGUF.get_or_init(|| {
        let dir = common::repo("target/test-llm-server");
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("sentistream-large.gguf");
        let o = common::sentistream_ok(&["models", "export-llm", "--out", out.to_str().unwrap()]);
        assert!(o.contains("60 attention weights merged"), "{o}");
        out
    })
}

fn backend(url: &str, timeout: Duration) -> OpenAiBackend {
    OpenAiBackend::new(url, "default", RemoteApi::LlamaCpp, None, timeout, 0.1, 3.0).unwrap()
}

const SENTENCES: [&str; 6] = [
    "I love this, it is absolutely wonderful.",
    "This is the worst service I have ever had, I am furious.",
    "The meeting is on Thursday at three o'clock.",
    "Thank you so much, you've been really helpful.",
    "It broke again and nobody called me back.",
    "The invoice number is 4471.",
];

#[test]
fn the_exported_model_answers_label_word_probabilities_like_the_local_one() {
    if ready().is_none() {
        return;
    }
    let gguf = exported();
    let size = std::fs::metadata(gguf).unwrap().len();
    let base = std::fs::metadata(common::models_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf"))
        .unwrap()
        .len();
    assert!(size > base && size < base + 30_000_000, "{size} vs {base}");
    let server = common::LlmServer::start(gguf, common::free_port());
    let mut remote = backend(&server.url(), Duration::from_secs(30));
    let local = Mllm::load(
        &common::models_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf"),
        &common::models_dir().join("mllm-adapter"),
    )
    .unwrap();
    let mut local = LocalBackend::new(local);
    let silent = WindowFeatures::default();
    let mut agree = 0;
    for s in SENTENCES {
        let r = remote.judge(s, &silent, None).unwrap();
        let sum: f32 = r.probs.iter().sum();
        assert!((sum - 1.0).abs() < 1e-3, "{s}: {:?}", r.probs);
        assert!(
            r.probs.iter().all(|&p| p > 0.0),
            "all three label words come back with a probability: {:?}",
            r.probs
        );
        let l = local.judge(s, &silent, None).unwrap();
        let arg = |p: &[f32; 3]| (0..3).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
        agree += usize::from(arg(&r.probs) == arg(&l.probs));
        eprintln!(
            "{s:60} remote {:?} local {:?}",
            r.probs.map(|p| (p * 100.0).round() / 100.0),
            l.probs.map(|p| (p * 100.0).round() / 100.0)
        );
    }
    let pos = remote.judge(SENTENCES[0], &silent, None).unwrap();
    let neg = remote.judge(SENTENCES[1], &silent, None).unwrap();
    assert!(pos.probs[2] > pos.probs[0], "{:?}", pos.probs);
    assert!(neg.probs[0] > neg.probs[2], "{:?}", neg.probs);
    assert!(pos.score > 0.0 && neg.score < 0.0);
    assert!(
        agree >= 4,
        "the remote's class agrees with the local model's on {agree}/6"
    );
}

#[test]
fn a_slow_answer_is_a_timeout_and_a_dead_server_is_unreachable() {
    if ready().is_none() {
        return;
    }
    let server = common::LlmServer::start(exported(), common::free_port());
    let mut b = backend(&server.url(), Duration::from_millis(1));
    let e = b
        .judge(SENTENCES[0], &WindowFeatures::default(), None)
        .unwrap_err();
    assert!(matches!(e, BackendError::Timeout { .. }), "{e}");
    let url = server.url();
    drop(server);
    let e = backend(&url, Duration::from_secs(5))
        .judge(SENTENCES[0], &WindowFeatures::default(), None)
        .unwrap_err();
    assert!(matches!(e, BackendError::Unreachable { .. }), "{e}");
    assert!(e.to_string().contains("is the server running"), "{e}");
}

fn read_events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e.get("stage").is_some())
        .collect()
}

fn answered_by_large(e: &Value) -> bool {
    e["fallback_reason"].is_null()
        && matches!(
            e["stage"].as_str(),
            Some("mllm" | "fused" | "cross_verified")
        )
}

#[test]
fn a_server_restart_mid_run_costs_only_the_windows_escalated_while_it_was_down() {
    if ready().is_none() || common::model("ggml-base-q8_0.bin").is_none() {
        return;
    }
    let port = common::free_port();
    let mut server = Some(common::LlmServer::start(exported(), port));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("remote.toml");
    std::fs::write(
        &cfg,
        format!(
            "[cascade]\nbackend = \"openai\"\nremote_api = \"llama_cpp\"\nurl = \"http://127.0.0.1:{port}/v1/chat/completions\"\ntimeout_ms = 20000\ntau1 = 0.0\n"
        ),
    )
    .unwrap();
    // tau1 = 0 escalates every window, so windows reach the server before the kill, while
    // it is down and after the restart, whatever share the committed small model would
    // escalate on its own (2 of the call's 18 windows at its lambda).
    let out = dir.path().join("call.jsonl");
    let mut run = Command::new(env!("CARGO_BIN_EXE_sentistream"))
        .args(["--config", cfg.to_str().unwrap(), "annotate"])
        .arg(common::repo("samples/call.mp4"))
        .args(["--language", "en", "--no-progress", "--out"])
        .arg(&out)
        .env("SENTISTREAM_MODELS", common::models_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let (mut killed_after, mut restarted_after) = (None, None);
    while run.try_wait().unwrap().is_none() {
        let events = read_events(&out);
        if killed_after.is_none() && events.iter().any(answered_by_large) {
            server = None;
            killed_after = Some(events.len());
        }
        let fell_back = events
            .iter()
            .any(|e| e["fallback_reason"] == "backend_unreachable");
        if restarted_after.is_none() && killed_after.is_some() && fell_back {
            server = Some(common::LlmServer::start(exported(), port));
            restarted_after = Some(read_events(&out).len());
        }
        assert!(t.elapsed() < Duration::from_secs(300), "annotate too slow");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut err = String::new();
    std::io::Read::read_to_string(run.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(run.wait().unwrap().success(), "{err}");
    drop(server);
    let events = read_events(&out);
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (0..events.len() as u64).collect::<Vec<_>>(),
        "every window, in order"
    );
    let killed = killed_after.expect("a window was answered by the server before the kill");
    let restarted = restarted_after.expect("a window escalated while the server was down");
    let down: Vec<&Value> = events
        .iter()
        .filter(|e| e["fallback_reason"] == "backend_unreachable")
        .collect();
    assert!(!down.is_empty());
    for e in &down {
        assert_eq!(e["stage"], "ubm_fallback", "{e}");
        assert!(
            e["mllm"].is_null() && e["ubm"]["score"].is_number(),
            "the small model's verdict: {e}"
        );
    }
    let after = events[restarted..]
        .iter()
        .filter(|e| answered_by_large(e))
        .count();
    eprintln!(
        "{} windows; server killed after {killed}, restarted after {restarted}; {} fell back; {after} answered by the restarted server",
        events.len(),
        down.len()
    );
    assert!(
        after >= 1,
        "the restarted server answers again: {events:#?}"
    );
}

/// POSTs `body` to the llama.cpp server's native endpoint `path` and parses the answer.
fn post(server: &common::LlmServer, path: &str, body: Value) -> Value {
    let url = server.url().replace("/v1/chat/completions", path);
    let text = ureq::post(&url)
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Our Gemma 3 (Q5_0/Q4_K/Q6_K/Q8_0 dequantisation, the Gemma 3 block, the SentencePiece
/// tokenizer rebuilt from the GGUF) against llama.cpp on the same file: the same token ids
/// for text with punctuation, digits, newlines, accents and emoji, and the same most
/// likely next token with log-probabilities of llama.cpp's top five within 0.25 nats,
/// also after a prompt longer than the sliding window.
#[test]
fn gemma3_tokenizes_and_predicts_like_llama_cpp() {
    let py = common::repo("third_party/xllamacpp/bin/python");
    if !py.is_file() {
        common::skip(&format!("{} is not installed", py.display()));
        return;
    }
    let Some(gguf) = common::model("gemma-3-270m-q4_k_m.gguf") else {
        return;
    };
    let llm = sentistream::models::llm::Llm::load(&gguf).unwrap();
    let server = common::LlmServer::start(&gguf, common::free_port());
    let texts = [
        "The capital of France is",
        "Honestly? It's fine.  Whatever...\nWe'll see on 12/03 at 4:30pm.",
        "Café déjà vu — naïve résumé 🙂 <start_of_turn>user\nhi",
        "I was on hold for 45 minutes and nobody called me back!!",
    ];
    for text in texts {
        let theirs = post(&server, "/tokenize", serde_json::json!({"content": text}));
        let theirs = common::i64s(&theirs["tokens"]);
        assert_eq!(llm.tokenize(text).unwrap(), theirs, "{text:?}");
    }
    let _g = tch::no_grad_guard();
    // Over 512 tokens the local layers see only the last 512 (the sliding window).
    let long = format!(
        "{}Overall, the support was",
        "Day 1: the router dropped the line, I called, waited, and got a refund. ".repeat(40)
    );
    assert!(llm.tokenize(&long).unwrap().len() > 600);
    for text in [texts[0], texts[3], long.as_str()] {
        let r = post(
            &server,
            "/completion",
            serde_json::json!({"prompt": text, "n_predict": 1, "temperature": 0, "n_probs": 5}),
        );
        let top = r["completion_probabilities"][0]["top_logprobs"]
            .as_array()
            .unwrap()
            .clone();
        let mut ids = vec![llm.bos().unwrap()];
        ids.extend(llm.tokenize(text).unwrap());
        let (h, _) = llm
            .forward(&llm.embed(&ids).unsqueeze(0), None, None)
            .unwrap();
        let last = h.select(1, h.size()[1] - 1);
        let logp = llm
            .logits(&last)
            .log_softmax(-1, tch::Kind::Float)
            .squeeze();
        assert_eq!(
            logp.argmax(-1, false).int64_value(&[]),
            top[0]["id"].as_i64().unwrap(),
            "{text:?}: {top:?}"
        );
        for t in &top {
            let ours = logp.double_value(&[t["id"].as_i64().unwrap()]);
            let theirs = t["logprob"].as_f64().unwrap();
            assert!((ours - theirs).abs() < 0.25, "{text:?} {t}: ours {ours:.3}");
        }
    }
}
