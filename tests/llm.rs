//! The large model on the real SmolLM2 GGUF: forward against reference logits computed
//! once by an independent NumPy implementation (scripts/llm-reference.py), the KV cache,
//! the tokenizer rebuilt from the GGUF, greedy generation, the multimodal adapter, and
//! clear start-up errors for missing or corrupt files.

mod common;

use sentistream::features::WindowFeatures;
use sentistream::models::llm::Llm;
use sentistream::models::mllm::{AdapterMeta, Mllm, Query};
use sentistream::routing::fusion::Verdict;

/// Largest absolute difference of two tensors of one shape.
fn max_diff(a: &tch::Tensor, b: &tch::Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

const GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn fixture() -> serde_json::Value {
    let text = std::fs::read_to_string(common::repo("tests/fixtures/llm_reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn forward_matches_the_numpy_reference() {
    let Some(path) = common::model(GGUF) else {
        return;
    };
    let llm = Llm::load(&path).unwrap();
    let f = fixture();
    let ids = common::i64s(&f["ids"]);
    // The tokenizer gives the reference's ids for the reference's text.
    assert_eq!(llm.tokenize(f["text"].as_str().unwrap()).unwrap(), ids);
    let _g = tch::no_grad_guard();
    let (h, _) = llm
        .forward(&llm.embed(&ids).unsqueeze(0), None, None)
        .unwrap();
    let last = h.select(1, ids.len() as i64 - 1).squeeze();
    let logits = llm.logits(&last);
    let mut worst = 0f64;
    for (id, want) in f["logits"].as_object().unwrap() {
        let got = logits.double_value(&[id.parse::<i64>().unwrap()]);
        worst = worst.max((got - want.as_f64().unwrap()).abs());
    }
    assert!(worst < 0.02, "largest logit difference {worst}");
    let top: Vec<i64> = Vec::try_from(logits.topk(5, -1, true, true).1).unwrap();
    assert_eq!(top, common::i64s(&f["top10"])[..5]);
}

#[test]
fn kv_cache_gives_the_same_answer_as_one_pass() {
    let Some(path) = common::model(GGUF) else {
        return;
    };
    let llm = Llm::load(&path).unwrap();
    let _g = tch::no_grad_guard();
    let ids = llm
        .tokenize("<|im_start|>user\nThe film was a delight from start to finish.")
        .unwrap();
    let (full, _) = llm
        .forward(&llm.embed(&ids).unsqueeze(0), None, None)
        .unwrap();
    let (_, cache) = llm
        .forward(&llm.embed(&ids[..5]).unsqueeze(0), None, None)
        .unwrap();
    let (rest, cache2) = llm
        .forward(&llm.embed(&ids[5..]).unsqueeze(0), Some(&cache), None)
        .unwrap();
    assert_eq!(cache2.len, ids.len() as i64);
    let diff = max_diff(&full.narrow(1, 5, ids.len() as i64 - 5), &rest);
    assert!(diff < 1e-3, "{diff}");
    // A batch of two identical rows (expanded cache) equals the single row.
    let (b2, _) = llm
        .forward(
            &llm.embed(&ids[5..]).unsqueeze(0).repeat([2, 1, 1]),
            Some(&cache.expand(2)),
            None,
        )
        .unwrap();
    let d2 = max_diff(&b2.get(1), &full.narrow(1, 5, ids.len() as i64 - 5).get(0));
    assert!(d2 < 1e-3, "{d2}");
}

#[test]
fn tokenizer_and_generation() {
    let Some(path) = common::model(GGUF) else {
        return;
    };
    let llm = Llm::load(&path).unwrap();
    // Control tokens are single ids; digits split one by one; label words are one token.
    assert_eq!(llm.tokenize("<|im_start|>").unwrap().len(), 1);
    assert_eq!(llm.tokenize("<|im_end|>").unwrap().len(), 1);
    assert_eq!(llm.tokenize("2026").unwrap().len(), 4);
    for w in ["positive", "negative", "neutral"] {
        llm.single_token(w).unwrap();
    }
    let s = "Héllo, wörld! 12 apples\n";
    assert_eq!(llm.decode(&llm.tokenize(s).unwrap()), s);
    let out = llm
        .generate(
            "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
            12,
        )
        .unwrap();
    assert!(out.contains("Paris"), "{out}");
}

#[test]
fn multimodal_adapter_answers_and_saves_and_loads() {
    let Some(path) = common::model(GGUF) else {
        return;
    };
    let bytes = std::fs::metadata(&path).unwrap().len();
    let m = Mllm::fresh(&path, AdapterMeta::new(bytes, 4, 0.1, 3.0)).unwrap();
    let f = WindowFeatures {
        text: None,
        audio: vec![0.3; 120 * 47],
        visual: vec![0.1; 10 * 11],
        pitch_ref: None,
    };
    let q = Query {
        text: "I loved every minute of it.",
        features: &f,
        earlier: None,
    };
    let a = m.judge(&q).unwrap();
    assert!((a.probs.iter().sum::<f32>() - 1.0).abs() < 1e-4);
    assert!(a.uncertainty >= 0.0 && a.uncertainty <= 1.0987);
    // The cross-verification prompt is longer and still answers.
    let q2 = Query {
        earlier: Some((
            Verdict {
                score: 1.0,
                uncertainty: 0.8,
            },
            Verdict {
                score: -1.0,
                uncertainty: 0.9,
            },
        )),
        ..q
    };
    assert!(m.prompt_tokens(&q2).unwrap() > m.prompt_tokens(&q).unwrap() + 20);
    m.judge(&q2).unwrap();
    // Batched answers equal single answers (padding is harmless).
    let short = Query { text: "Bad.", ..q };
    let batch = m.judge_batch(&[q, short]).unwrap();
    let single = m.judge(&short).unwrap();
    assert!((batch[1].probs[2] - single.probs[2]).abs() < 1e-4);
    assert!((batch[0].probs[2] - a.probs[2]).abs() < 1e-4);
    // Save, load, same answer.
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("adapter");
    m.adapter.save(&base).unwrap();
    let back = Mllm::load(&path, &base).unwrap();
    assert!((back.judge(&q).unwrap().probs[0] - a.probs[0]).abs() < 1e-5);
}

#[test]
fn missing_or_corrupt_files_fail_at_start_up() {
    let Some(path) = common::model(GGUF) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Truncated GGUF.
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let e = Llm::load(&cut).err().unwrap().to_string();
    assert!(e.contains("cut.gguf"), "{e}");
    let e = Llm::load(&dir.path().join("none.gguf"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("missing") && e.contains("models install"), "{e}");
    // Missing adapter, corrupt adapter metadata, adapter for another base model.
    let base = dir.path().join("adapter");
    let e = Mllm::load(&path, &base).err().unwrap().to_string();
    assert!(
        e.contains("adapter.safetensors") || e.contains("adapter.json"),
        "{e}"
    );
    std::fs::write(base.with_extension("safetensors"), b"x").unwrap();
    std::fs::write(base.with_extension("json"), b"{not json").unwrap();
    let e = Mllm::load(&path, &base).err().unwrap().to_string();
    assert!(e.contains("adapter.json"), "{e}");
    let mut meta = AdapterMeta::new(12345, 4, 0.1, 3.0);
    meta.tau2 = Some(0.5);
    std::fs::write(
        base.with_extension("json"),
        serde_json::to_string(&meta).unwrap(),
    )
    .unwrap();
    let e = Mllm::load(&path, &base).err().unwrap().to_string();
    assert!(e.contains("12345-byte base model"), "{e}");
    // Through the CLI: annotate refuses to start with a broken adapter.
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!("[cascade]\nadapter = \"{}\"\n", base.display()),
    )
    .unwrap();
    let sample = common::repo("samples/sample.mp4");
    let out = common::sentistream(&[
        "annotate",
        sample.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "--no-progress",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("adapter.json"), "{err}");
    assert!(
        out.stdout.is_empty(),
        "nothing emitted before start-up checks"
    );
}

#[test]
fn a_gguf_rewritten_with_replaced_tensors_reads_back_exactly() {
    use half::f16;
    use sentistream::assets::gguf::Gguf;
    use std::collections::BTreeMap;
    let Some(path) = common::model(GGUF) else {
        return;
    };
    let g = Gguf::open(&path).unwrap();
    let name = "blk.3.attn_q.weight";
    let (shape, w) = g.tensor_f32(name).unwrap();
    let changed: Vec<f16> = w.iter().map(|v| f16::from_f32(v + 0.25)).collect();
    let mut replace = BTreeMap::new();
    replace.insert(name.to_string(), changed.clone());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.gguf");
    g.write_with(&out, &replace, &[("sentistream.test", "yes")])
        .unwrap();
    let h = Gguf::open(&out).unwrap();
    assert_eq!(h.str("sentistream.test"), Some("yes"));
    for (k, v) in &g.metadata {
        assert_eq!(h.metadata.get(k), Some(v), "metadata {k} copied");
    }
    let (shape2, w2) = h.tensor_f32(name).unwrap();
    assert_eq!(shape, shape2);
    let want: Vec<f32> = changed.iter().map(|v| v.to_f32()).collect();
    assert_eq!(w2, want, "the replaced tensor, in f16");
    for other in [
        "token_embd.weight",
        "blk.3.attn_k.weight",
        "output_norm.weight",
    ] {
        assert_eq!(
            g.tensor_f32(other).unwrap(),
            h.tensor_f32(other).unwrap(),
            "{other} copied verbatim"
        );
    }
    // The rewritten file still loads as a model.
    Llm::load(&out).unwrap();
}

const GEMMA: &str = "gemma-3-270m-q4_k_m.gguf";

/// Gemma 3: the KV cache and the sliding window. 600 tokens in one pass equal 520 then
/// 80 through the cache (the window of 512 then hides keys on the local layers in both
/// ways of computing it), and the tokenizer round-trips text.
#[test]
fn gemma3_cache_and_sliding_window_agree_with_one_pass() {
    let Some(path) = common::model(GEMMA) else {
        return;
    };
    let llm = Llm::load(&path).unwrap();
    let s = "Héllo, wörld! 12 apples\n\n  and\ttabs";
    assert_eq!(llm.decode(&llm.tokenize(s).unwrap()), s);
    let _g = tch::no_grad_guard();
    let mut ids = vec![llm.bos().unwrap()];
    while ids.len() < 600 {
        ids.extend(
            llm.tokenize(" The call was fine until the line dropped, twice.")
                .unwrap(),
        );
    }
    ids.truncate(600);
    let x = llm.embed(&ids).unsqueeze(0);
    let (full, _) = llm.forward(&x, None, None).unwrap();
    let (_, cache) = llm.forward(&x.narrow(1, 0, 520), None, None).unwrap();
    let (rest, c2) = llm
        .forward(&x.narrow(1, 520, 80), Some(&cache), None)
        .unwrap();
    assert_eq!(c2.len, 600);
    let diff = max_diff(&full.narrow(1, 520, 80), &rest);
    assert!(diff < 2e-3, "{diff}");
}

/// The committed Gemma adapter (models/mllm-gemma.*) judges clear sentences without
/// audio or face like their words say.
#[test]
fn gemma3_with_its_adapter_judges_clear_sentences() {
    let Some(path) = common::model(GEMMA) else {
        return;
    };
    let m = Mllm::load(&path, &common::models_dir().join("mllm-gemma")).unwrap();
    let silent = WindowFeatures::default();
    for (text, class) in [
        ("Thank you so much, this fixed everything, I'm thrilled.", 2),
        (
            "This is the third time it broke and nobody called me back. Unacceptable.",
            0,
        ),
    ] {
        let a = m
            .judge(&Query {
                text,
                features: &silent,
                earlier: None,
            })
            .unwrap();
        let best = (0..3)
            .max_by(|&i, &j| a.probs[i].total_cmp(&a.probs[j]))
            .unwrap();
        assert_eq!(best, class, "{text}: {a:?}");
        assert!((a.probs.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        assert!(a.score.abs() <= 3.0);
    }
}
