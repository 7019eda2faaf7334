//! Feature extractors on real inputs: MiniLM against reference embeddings computed once
//! by an independent NumPy implementation (scripts/minilm-reference.py), multilingual-e5
//! against the C engine shipped with its file (scripts/e5-reference.py), and the audio
//! features on the sample clip's speech and pauses.

mod common;

use sentistream::config::SourceConfig;
use sentistream::features::audio::{AUDIO_DIM, AudioFeaturizer, HOP, idx};
use sentistream::features::text::{EncoderKind, TEXT_DIM, TextEncoder};
use sentistream::source::{SAMPLE_RATE, Source, SourceMsg};

/// The entries of a reference file in tests/fixtures.
fn reference(name: &str) -> Vec<serde_json::Value> {
    let path = common::repo(&format!("tests/fixtures/{name}"));
    let refs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    refs.as_array().unwrap().clone()
}

/// A reference entry's embedding.
fn embedding(r: &serde_json::Value) -> Vec<f32> {
    r["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn minilm_matches_reference_embeddings() {
    let Some(dir) = common::model("all-MiniLM-L6-v2/model.safetensors")
        .map(|p| p.parent().unwrap().to_path_buf())
    else {
        return;
    };
    let enc = TextEncoder::load(&dir).unwrap();
    let refs = reference("minilm_reference.json");
    let refs = &refs;
    let texts: Vec<&str> = refs.iter().map(|r| r["text"].as_str().unwrap()).collect();
    // Batched (with padding) and one at a time must both match.
    let batch = enc.encode(&texts).unwrap();
    assert_eq!(batch.size(), vec![texts.len() as i64, TEXT_DIM as i64]);
    for (i, r) in refs.iter().enumerate() {
        let ids: Vec<u32> = r["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            enc.token_ids(texts[i]).unwrap(),
            ids,
            "token ids of {:?}",
            texts[i]
        );
        let want = embedding(r);
        let single = enc.encode_one(texts[i]).unwrap();
        let batched: Vec<f32> = Vec::try_from(batch.get(i as i64)).unwrap();
        for got in [&single, &batched] {
            let max_err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(max_err < 1e-4, "{:?}: max abs error {max_err}", texts[i]);
        }
    }
    // Sanity: the two opinions are further apart than a sentence and itself.
    let a = enc.encode_one("I love this.").unwrap();
    let b = enc.encode_one("I hate this.").unwrap();
    let cos: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    assert!(cos < 0.99 && cos > 0.0);
}

#[test]
fn e5_matches_the_reference_engine_in_english_and_chinese() {
    let Some(path) = common::model("multilingual-e5-small/e5-small-q4.bin") else {
        return;
    };
    let enc = TextEncoder::load_e5(&path).unwrap();
    assert_eq!(enc.kind(), EncoderKind::E5Small);
    let refs = reference("e5_reference.json");
    let refs = &refs;
    let texts: Vec<&str> = refs.iter().map(|r| r["text"].as_str().unwrap()).collect();
    let batch = enc.encode(&texts).unwrap();
    for (i, r) in refs.iter().enumerate() {
        // The same SentencePiece split: as many tokens ("query: " prefix, <s>, </s>).
        assert_eq!(
            enc.token_ids(texts[i]).unwrap().len() as u64,
            r["tokens"].as_u64().unwrap(),
            "token count of {:?}",
            texts[i]
        );
        let want = embedding(r);
        let single = enc.encode_one(texts[i]).unwrap();
        let batched: Vec<f32> = Vec::try_from(batch.get(i as i64)).unwrap();
        for got in [&single, &batched] {
            // The reference quantises activations to 8 bits; the port keeps them in f32.
            let cos: f32 = got.iter().zip(&want).map(|(a, b)| a * b).sum();
            assert!(cos > 0.99, "{:?}: cosine {cos} to the reference", texts[i]);
        }
    }
    // A Chinese complaint is nearer an English complaint than to praise.
    let e = |t: &str| enc.encode_one(t).unwrap();
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let (zh, bad, good) = (
        e("快递太慢了，非常失望。"),
        e("The delivery was slow, very disappointing."),
        e("I am so happy with this, it is wonderful."),
    );
    assert!(dot(&zh, &bad) > dot(&zh, &good));
}

#[test]
fn audio_features_on_the_sample_separate_speech_from_pauses() {
    let sample = common::repo("samples/sample.mp4");
    let truth: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo("samples/sample.json")).unwrap(),
    )
    .unwrap();
    let (audio, _) = sentistream::source::decode_all(&sample, &SourceConfig::default()).unwrap();
    let mut f = AudioFeaturizer::new();
    let mut feats = Vec::new();
    f.compute(&audio, &mut feats);
    assert_eq!(feats.len() % AUDIO_DIM, 0);
    assert!(feats.iter().all(|v| v.is_finite()));
    let frame_at =
        |t: f64| &feats[(t * SAMPLE_RATE as f64 / HOP as f64) as usize * AUDIO_DIM..][..AUDIO_DIM];
    let s = &truth["sentences"][0];
    let (start, end) = (s["start"].as_f64().unwrap(), s["end"].as_f64().unwrap());
    // Voiced frames inside the first sentence have a male-voice pitch; the lead-in is silent.
    let mut f0s = Vec::new();
    let mut t = start + 0.1;
    while t < end - 0.1 {
        let fr = frame_at(t);
        if fr[idx::VOICING] > 0.6 {
            f0s.push(fr[idx::F0] * 500.0);
        }
        t += 0.01;
    }
    assert!(f0s.len() > 50, "voiced frames in speech: {}", f0s.len());
    f0s.sort_by(f32::total_cmp);
    let median = f0s[f0s.len() / 2];
    assert!((70.0..220.0).contains(&median), "median f0 {median}");
    let speech_db = frame_at((start + end) / 2.0)[idx::ENERGY];
    let pause_db = frame_at(0.3)[idx::ENERGY];
    assert!(
        speech_db > pause_db + 0.3,
        "speech {speech_db} vs pause {pause_db} (dB/100)"
    );
}

#[test]
fn faces_found_in_the_sample_and_marked_absent_in_test_bars() {
    use sentistream::features::visual::{VIS_DIM, VisualFeaturizer, VisualModels, idx as v};
    let models = VisualModels::installed(&common::models_dir());
    if models.caffemodel.is_none() {
        common::skip("the res10 face model is not installed");
        return;
    }
    let mut vf = VisualFeaturizer::load(&models).unwrap();
    assert_eq!(vf.detector(), "res10-ssd");
    let src = Source::open(
        common::repo("samples/sample.mp4").to_str().unwrap(),
        &SourceConfig::default(),
    )
    .unwrap();
    let mut feats = Vec::new();
    let started = std::time::Instant::now();
    loop {
        match src.recv() {
            SourceMsg::Video(f) => vf.frame(&f.data, f.width, f.height, &mut feats).unwrap(),
            SourceMsg::Eos => break,
            SourceMsg::Error(e) => panic!("{e}"),
            _ => {}
        }
    }
    let n = feats.len() / VIS_DIM;
    eprintln!(
        "{n} frames, {:.1} ms per frame (decode included)",
        started.elapsed().as_secs_f64() * 1e3 / n as f64
    );
    let with_face = (0..n)
        .filter(|i| feats[i * VIS_DIM + v::PRESENT] == 1.0)
        .count();
    assert!(
        with_face as f64 > 0.9 * n as f64,
        "face in {with_face}/{n} frames"
    );
    for i in (0..n).filter(|i| feats[i * VIS_DIM + v::PRESENT] == 1.0) {
        let f = &feats[i * VIS_DIM..(i + 1) * VIS_DIM];
        // The carphone face sits in the middle of the frame and fills a good part of it.
        assert!(
            f[v::CX] > 0.2 && f[v::CX] < 0.8 && f[v::W] > 0.15 && f[v::W] < 0.9,
            "{f:?}"
        );
        assert!(f[v::CONFIDENCE] >= 0.5);
    }
    // Colour bars have no face: the frame is kept and marked absent.
    let bars = vec![128u8; 64 * 48 * 3];
    let before = feats.len();
    vf.frame(&bars, 64, 48, &mut feats).unwrap();
    assert_eq!(feats.len(), before + VIS_DIM);
    assert!(feats[before..].iter().all(|&x| x == 0.0));
    // Haar fallback works too.
    let haar = VisualModels {
        prototxt: None,
        caffemodel: None,
        ..models
    };
    assert_eq!(VisualFeaturizer::load(&haar).unwrap().detector(), "haar");
}

#[test]
fn smollm2_gguf_reads_and_dequantises() {
    use sentistream::assets::gguf::{Gguf, TensorType};
    let Some(path) = common::model("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let g = Gguf::open(&path).unwrap();
    assert_eq!(g.tensors.len(), 272);
    assert_eq!(g.str("general.architecture"), Some("llama"));
    assert_eq!(g.uint("llama.block_count"), Some(30));
    assert_eq!(g.uint("llama.embedding_length"), Some(576));
    assert_eq!(g.uint("llama.attention.head_count_kv"), Some(3));
    assert_eq!(g.strings("tokenizer.ggml.tokens").unwrap().len(), 49152);
    assert!(
        g.str("tokenizer.chat_template")
            .unwrap()
            .contains("<|im_start|>")
    );
    assert!(
        g.info("output.weight").is_none(),
        "the output projection is tied to the embedding"
    );
    let q = g.info("blk.0.attn_q.weight").unwrap();
    assert_eq!(q.kind, TensorType::Q4_1);
    let (shape, w) = g.tensor_f32("blk.0.attn_q.weight").unwrap();
    assert_eq!(shape, vec![576, 576]);
    assert_eq!(w.len(), 576 * 576);
    let mean = w.iter().sum::<f32>() / w.len() as f32;
    let std = (w.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / w.len() as f32).sqrt();
    assert!(w.iter().all(|x| x.is_finite()));
    assert!(
        mean.abs() < 0.01 && std > 0.01 && std < 0.5,
        "mean {mean} std {std}"
    );
    let (shape, emb) = g.tensor_f32("token_embd.weight").unwrap();
    assert_eq!(shape, vec![49152, 576]);
    assert!(emb.iter().any(|&x| x != 0.0));
    let (_, norm) = g.tensor_f32("blk.0.attn_norm.weight").unwrap();
    assert_eq!(norm.len(), 576);
}
